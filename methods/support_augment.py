"""Reference row `support-augment`: the k support images through the shared augmentation module.

What augmentation alone reaches: the transfer-learning methods fine-tune on exactly this kind of
pool (`bench.sdk.augment`, the same module and default settings), so a method that does not beat
this row on recall and coverage has learnt nothing its augmentation did not already give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.method import ReferenceRow
from bench.sdk.task import FewShotTask
from methods import register


@dataclass(frozen=True)
class SupportAugmentConfig:
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@register
class SupportAugment(ReferenceRow):
    title = (
        "Augmented support: seeded shifts, rotations, zoom, brightness/contrast (flips where allowed) of the k images"
    )
    reference = "this benchmark (reference row); augmentation as in the transfer-learning methods"
    version = "1"
    Config = SupportAugmentConfig

    def prepare(self, task: FewShotTask) -> None:
        self.support = task.support
        self.allow_hflip = task.allows_hflip

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # Every output is a transformed copy (no untouched originals), each support image used equally.
        return augment(self.support, n, generator, self.config.augment, self.allow_hflip, keep_originals=False)
