"""Reference row `support-copy`: the k support images, repeated to the sample count.

The floor every few-shot generator must clear: it scores perfectly on anything that rewards
looking like the support set (precision, class consistency) and shows what pure memorisation
looks like on the rest (recall near 0, `support_nn_mse` of 0).
"""

from __future__ import annotations

import torch

from bench.sdk.method import ReferenceRow
from bench.sdk.task import FewShotTask
from methods import register


@register
class SupportCopy(ReferenceRow):
    title = "Support copies: the k support images repeated (memorisation floor)"
    reference = "this benchmark (reference row)"
    version = "1"

    def prepare(self, task: FewShotTask) -> None:
        self.support = task.support

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # Each support image equally often, in a seeded order.
        order = torch.randperm(n, generator=generator)
        return self.support[order % len(self.support)].clone()
