"""Reference row `oracle`: real images of the novel class that neither the method nor the metrics saw.

Samples are drawn without replacement from the novel class's TRAIN images outside the support
set (never the evaluation reference, which is the TEST split). No generator can be expected to
do better than fresh real images of the class under this protocol: this row is the ceiling of
every table.
"""

from __future__ import annotations

import torch

from bench.sdk.method import ReferenceRow
from bench.sdk.task import FewShotTask
from methods import register


@register
class Oracle(ReferenceRow):
    title = "Oracle: unseen real train images of the novel class (ceiling)"
    reference = "this benchmark (reference row)"
    version = "1"
    sees_unseen_novel_images = True

    def prepare(self, task: FewShotTask) -> None:
        if task.unseen_novel is None or len(task.unseen_novel) == 0:
            raise ValueError(
                "the oracle needs unseen train images of the novel class (FewShotTask.unseen_novel); "
                f"split {task.info.split_id} has none outside its support set and evaluation reference"
            )
        self.pool = task.unseen_novel

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if n > len(self.pool):
            raise ValueError(f"the oracle has {len(self.pool)} unseen images of the novel class; {n} were asked for")
        return self.pool[torch.randperm(len(self.pool), generator=generator)[:n]].clone()
