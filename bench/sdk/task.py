"""What a method is given (`FewShotTask`) and the identity of the split it came from (`SplitInfo`).

The SDK's view of the data: a method never imports the dataset or split code, only these types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass(frozen=True)
class SplitInfo:
    """Identity of one split: what goes into every result record."""

    dataset: str
    protocol: str
    version: int
    split_id: str
    novel_class: int | None  # None for a task set (one novel class per task)
    novel_class_name: str
    shots: int
    seed: int
    support_indices: tuple[int, ...]
    n_base: int
    n_reference: int
    sha256: str
    data_provenance: dict = field(default_factory=dict, compare=False)
    # For a task set: one entry per task (its novel class, name and support draw).
    tasks: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        record = asdict(self)
        record["support_indices"] = list(self.support_indices)
        record["tasks"] = [dict(task) for task in self.tasks]
        if not self.tasks:
            del record["tasks"]
        return record


@dataclass(frozen=True)
class FewShotTask:
    """What a method is given: base-class images with labels and the k support images of the novel class.

    Images are float32 tensors in [0, 1], shape (N, C, H, W). The evaluation reference is
    deliberately not part of the task.
    """

    base_images: torch.Tensor
    base_labels: torch.Tensor
    support: torch.Tensor
    image_shape: tuple[int, int, int]
    num_classes: int
    novel_class: int
    allows_hflip: bool
    info: SplitInfo
    # One sentence per class (the dataset's `class_descriptions`; empty if it has none): the semantic
    # modality of text-conditioned methods (bench.sdk.semantics).
    class_descriptions: tuple[str, ...] = ()
    # Only for reference entries that declare `sees_unseen_novel_images` (the oracle): the novel
    # class's other TRAIN images. A method's task never carries them.
    unseen_novel: torch.Tensor | None = None

    @property
    def shots(self) -> int:
        return int(self.support.shape[0])
