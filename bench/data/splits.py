"""The versioned few-shot split protocol.

`novel-class` protocol, version 1 (`<dataset>/novel<c>-<k>shot.v1`):
- base set: every TRAIN image whose class is not the novel class `c` (with labels);
- support: `k` TRAIN images of class `c`, drawn without replacement by
  `numpy.random.default_rng(seed).choice(<train indices of class c>, k, replace=False)`;
  seed `s` is support draw `s`;
- evaluation reference: every TEST image of class `c` (1,000 for Fashion-MNIST ankle boots, 1,009 for MNIST 9s).

The split hash is the sha256 of the split id and seed, the support indices and the bytes of the
base images and labels, the support images and the reference images: two results with the
same hash were measured on the same data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.datasets import DATASETS, ImageDataset, LoadedData
from bench.data.datasets.omniglot import DRAWERS
from bench.sdk.task import FewShotTask, SplitInfo

PROTOCOL = "novel-class"
PROTOCOL_VERSION = 1
MAX_SHOTS = 1000


@dataclass(frozen=True)
class Split:
    """A task plus the evaluation reference that is kept away from the method."""

    task: FewShotTask
    reference: torch.Tensor
    unseen_novel_indices: tuple[int, ...] = ()  # train indices of the novel class not in the support set
    # Unconditional protocol only: images never given to the method, when `reference` includes seen ones.
    held_out: torch.Tensor | None = None

    @property
    def info(self) -> SplitInfo:
        return self.task.info

    def task_for(self, method_cls) -> FewShotTask:
        """What `method_cls` is given: the task, plus the unseen images only if it is a reference row that declares so."""
        return self.task_with_unseen_novel() if getattr(method_cls, "sees_unseen_novel_images", False) else self.task

    def task_with_unseen_novel(self) -> FewShotTask:
        """The task plus the novel class's unseen train images: for the oracle reference row only."""
        _, data = load_dataset(self.info.dataset)
        return dataclasses.replace(self.task, unseen_novel=to_float(data.train_images[list(self.unseen_novel_indices)]))


def split_id(dataset: str, novel_class: int, shots: int) -> str:
    return f"{dataset}/novel{novel_class}-{shots}shot.v{PROTOCOL_VERSION}"


@functools.lru_cache(maxsize=4)
def load_dataset(name: str) -> tuple[ImageDataset, LoadedData]:
    """Load (and keep in memory) a registered dataset."""
    dataset = DATASETS.get(name)
    return dataset, dataset.load()


def to_float(images: np.ndarray) -> torch.Tensor:
    # astype copies: the loaded arrays may be read-only memory maps, which torch refuses to wrap.
    return torch.from_numpy(images.astype(np.float32)).div_(255.0)


def validate_shots(shots: int, available: int | None = None) -> None:
    if not isinstance(shots, int) or shots < 1 or shots > MAX_SHOTS:
        raise ValueError(f"--shots must be an integer between 1 and {MAX_SHOTS}, got {shots!r}")
    if available is not None and shots > available:
        raise ValueError(f"--shots {shots} exceeds the {available} train images available for the support set")


def make_split(dataset_name: str, shots: int = 4, seed: int = 0, novel_class: int | str | None = None) -> Split:
    """Build the novel-class split of `dataset_name` for `shots` support images and support draw `seed`."""
    validate_shots(shots)
    if PROTOCOL not in DATASETS.get(dataset_name).protocols:
        raise ValueError(
            f"{dataset_name} does not use the {PROTOCOL} protocol (its protocols: "
            f"{', '.join(DATASETS.get(dataset_name).protocols)}); `bench run` evaluates it"
        )
    dataset, data = load_dataset(DATASETS.get(dataset_name).name)
    novel = dataset.default_novel_class if novel_class is None else dataset.class_index(novel_class)

    novel_train = np.flatnonzero(data.train_labels == novel)
    validate_shots(shots, len(novel_train))
    rng = np.random.default_rng(seed)
    support_indices = rng.choice(novel_train, size=shots, replace=False)
    base_mask = data.train_labels != novel
    reference_mask = data.test_labels == novel

    base_images = data.train_images[base_mask]
    base_labels = data.train_labels[base_mask]
    support = data.train_images[support_indices]
    reference = data.test_images[reference_mask]

    digest = hashlib.sha256()
    # allows_hflip is part of what a method is given (it shapes every augmentation), so it is hashed too.
    digest.update(f"{split_id(dataset.name, novel, shots)}|seed={seed}|hflip={dataset.allows_hflip}|".encode())
    digest.update(np.asarray(support_indices, dtype=np.int64).tobytes())
    for array in (base_images, base_labels, support, reference):
        digest.update(np.ascontiguousarray(array).tobytes())

    info = SplitInfo(
        dataset=dataset.name,
        protocol=PROTOCOL,
        version=PROTOCOL_VERSION,
        split_id=split_id(dataset.name, novel, shots),
        novel_class=int(novel),
        novel_class_name=dataset.class_names[novel],
        shots=shots,
        seed=seed,
        support_indices=tuple(int(i) for i in support_indices),
        n_base=int(base_mask.sum()),
        n_reference=int(reference_mask.sum()),
        sha256=digest.hexdigest(),
        data_provenance=data.provenance,
    )
    task = FewShotTask(
        base_images=to_float(base_images),
        base_labels=torch.from_numpy(base_labels),
        support=to_float(support),
        image_shape=dataset.image_shape,
        num_classes=dataset.num_classes,
        novel_class=int(novel),
        allows_hflip=dataset.allows_hflip,
        info=info,
        class_descriptions=tuple(dataset.class_descriptions or ()),
    )
    unseen = np.setdiff1d(novel_train, support_indices)  # sorted: a fixed order for every consumer
    return Split(task=task, reference=to_float(reference), unseen_novel_indices=tuple(int(i) for i in unseen))


# -- omniglot-characters protocol ---------------------------------------------------------
CHARACTER_PROTOCOL = "omniglot-characters"
CHARACTER_PROTOCOL_VERSION = 1
DEFAULT_CHARACTERS = 20  # novel characters per run, as in FIGR's Omniglot evaluation
SMOKE_CHARACTERS = 4  # the smoke profile checks that everything runs: 4 tasks, not 20


def default_characters(profile: str) -> int:
    """Novel characters per run of the omniglot-characters protocol when none are asked for."""
    return SMOKE_CHARACTERS if profile == "smoke" else DEFAULT_CHARACTERS


@dataclass(frozen=True)
class TaskSet:
    """Several few-shot tasks evaluated as one run (Omniglot: one task per novel character).

    Every task shares the base images (the same tensors); each has its own support set and
    evaluation reference. `info` identifies the whole set and lists the tasks.
    """

    info: SplitInfo
    splits: tuple[Split, ...]

    @property
    def reference(self) -> torch.Tensor:
        return torch.cat([split.reference for split in self.splits])

    @property
    def support(self) -> torch.Tensor:
        return torch.cat([split.task.support for split in self.splits])


def character_set_id(dataset: str, characters: int, shots: int) -> str:
    return f"{dataset}/characters{characters}-{shots}shot.v{CHARACTER_PROTOCOL_VERSION}"


def make_character_tasks(
    dataset_name: str, shots: int = 1, seed: int = 0, characters: int = DEFAULT_CHARACTERS
) -> TaskSet:
    """The `omniglot-characters` protocol, version 1 (`<dataset>/characters<N>-<k>shot.v1`).

    - base set: every drawing of every background character (964 x 20, labels 0..963);
    - novel characters: `rng.choice(<evaluation characters>, N, replace=False)`, sorted, with
      `rng = numpy.random.default_rng(seed)`;
    - per novel character, in that order: support = `rng.choice(20, k, replace=False)` drawers;
      evaluation reference = its other 20 - k drawers.
    """
    dataset, data = load_dataset(DATASETS.get(dataset_name).name)
    evaluation = data.extra["evaluation_images"]
    n_evaluation = len(evaluation)
    if not isinstance(characters, int) or not 1 <= characters <= n_evaluation:
        raise ValueError(f"--characters must be an integer between 1 and {n_evaluation}, got {characters!r}")
    if not isinstance(shots, int) or not 1 <= shots < DRAWERS:
        raise ValueError(
            f"--shots must be between 1 and {DRAWERS - 1} for {dataset.name} ({DRAWERS} drawers per character)"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n_evaluation, size=characters, replace=False))
    n_base_classes = dataset.evaluator_num_classes
    base_images = np.concatenate([data.train_images, data.test_images])
    base_labels = np.concatenate([data.train_labels, data.test_labels])
    set_id = character_set_id(dataset.name, characters, shots)

    digest = hashlib.sha256(f"{set_id}|seed={seed}|hflip={dataset.allows_hflip}|".encode())
    digest.update(np.ascontiguousarray(base_images).tobytes() + base_labels.tobytes())
    shared_base, shared_labels = to_float(base_images), torch.from_numpy(base_labels)
    splits, entries = [], []
    for character in chosen:
        drawers = rng.choice(DRAWERS, size=shots, replace=False)
        others = np.setdiff1d(np.arange(DRAWERS), drawers)
        support, reference = evaluation[character, drawers], evaluation[character, others]
        novel = n_base_classes + int(character)
        task_digest = hashlib.sha256(f"{set_id}|seed={seed}|class={novel}|".encode())
        task_digest.update(drawers.astype(np.int64).tobytes() + support.tobytes() + reference.tobytes())
        digest.update(task_digest.digest())
        info = SplitInfo(
            dataset=dataset.name,
            protocol=CHARACTER_PROTOCOL,
            version=CHARACTER_PROTOCOL_VERSION,
            split_id=f"{set_id}#{novel}",
            novel_class=novel,
            novel_class_name=dataset.class_names[novel],
            shots=shots,
            seed=seed,
            support_indices=tuple(int(d) for d in drawers),
            n_base=len(base_images),
            n_reference=len(others),
            sha256=task_digest.hexdigest(),
        )
        task = FewShotTask(
            base_images=shared_base,
            base_labels=shared_labels,
            support=to_float(support),
            image_shape=dataset.image_shape,
            num_classes=dataset.num_classes,
            novel_class=novel,
            allows_hflip=dataset.allows_hflip,
            info=info,
            class_descriptions=tuple(dataset.class_descriptions or ()),
        )
        splits.append(Split(task=task, reference=to_float(reference)))
        entries.append(
            {"novel_class": novel, "name": info.novel_class_name, "support_drawers": list(info.support_indices)}
        )

    info = SplitInfo(
        dataset=dataset.name,
        protocol=CHARACTER_PROTOCOL,
        version=CHARACTER_PROTOCOL_VERSION,
        split_id=set_id,
        novel_class=None,
        novel_class_name=f"{characters} evaluation characters",
        shots=shots,
        seed=seed,
        support_indices=(),
        n_base=len(base_images),
        n_reference=sum(int(s.reference.shape[0]) for s in splits),
        sha256=digest.hexdigest(),
        data_provenance=data.provenance,
        tasks=tuple(entries),
    )
    return TaskSet(info=info, splits=tuple(splits))


# -- unconditional protocol (image folders without classes) --------------------------------
UNCONDITIONAL_PROTOCOL = "unconditional"
UNCONDITIONAL_PROTOCOL_VERSION = 1


def make_unconditional_split(dataset_name: str, shots: int, seed: int = 0) -> Split:
    """The `unconditional` protocol, version 1 (`<dataset>/unconditional-<k>shot.v1`): the few-shot
    setting of the IMLE and FastGAN papers, for a folder of images without classes.

    - the folder is divided once (fixed seed, part of the dataset) into a train part (90%) and a
      held-out part (10%, at least one image);
    - base set: empty (nothing to pretrain on);
    - support: `k` train-part images, `numpy.random.default_rng(seed).choice(n_train, k, replace=False)`
      (`--shots` = the train part's size trains on all of it);
    - evaluation reference: every image of the folder (FID "against the same set", as in the papers);
    - held-out: the held-out part, the targets of `lpips_backtrack` (images the method never saw).
    """
    validate_shots(shots)
    dataset, data = load_dataset(DATASETS.get(dataset_name).name)
    validate_shots(shots, len(data.train_images))
    support_indices = np.random.default_rng(seed).choice(len(data.train_images), size=shots, replace=False)
    reference = np.concatenate([data.train_images, data.test_images])
    split_name = unconditional_split_id(dataset.name, shots)
    digest = hashlib.sha256(f"{split_name}|seed={seed}|hflip={dataset.allows_hflip}|".encode())
    digest.update(np.asarray(support_indices, dtype=np.int64).tobytes())
    for array in (data.train_images[support_indices], reference, data.test_images):
        digest.update(np.ascontiguousarray(array).tobytes())
    info = SplitInfo(
        dataset=dataset.name,
        protocol=UNCONDITIONAL_PROTOCOL,
        version=UNCONDITIONAL_PROTOCOL_VERSION,
        split_id=split_name,
        novel_class=0,
        novel_class_name=dataset.class_names[0],
        shots=shots,
        seed=seed,
        support_indices=tuple(int(i) for i in support_indices),
        n_base=0,
        n_reference=len(reference),
        sha256=digest.hexdigest(),
        data_provenance=data.provenance,
    )
    empty = torch.zeros((0, *dataset.image_shape))
    task = FewShotTask(
        base_images=empty,
        base_labels=torch.zeros(0, dtype=torch.int64),
        support=to_float(data.train_images[support_indices]),
        image_shape=dataset.image_shape,
        num_classes=1,
        novel_class=0,
        allows_hflip=dataset.allows_hflip,
        info=info,
    )
    return Split(task=task, reference=to_float(reference), held_out=to_float(data.test_images))


def unconditional_split_id(dataset: str, shots: int) -> str:
    return f"{dataset}/unconditional-{shots}shot.v{UNCONDITIONAL_PROTOCOL_VERSION}"


def run_split_id(dataset_name: str, shots: int, novel_class: int, characters: int = DEFAULT_CHARACTERS) -> str:
    """The id of the split `make_run_split` builds for a resolved novel class, without loading any data."""
    dataset = DATASETS.get(dataset_name)
    if CHARACTER_PROTOCOL in dataset.protocols:
        return character_set_id(dataset.name, characters, shots)
    if UNCONDITIONAL_PROTOCOL in dataset.protocols:
        return unconditional_split_id(dataset.name, shots)
    return split_id(dataset.name, novel_class, shots)


def make_run_split(
    dataset_name: str, shots: int, seed: int, novel_class: int | str | None = None, characters: int = DEFAULT_CHARACTERS
) -> Split | TaskSet:
    """What one run is evaluated on, by the dataset's protocol: a `Split` or a `TaskSet`."""
    dataset = DATASETS.get(dataset_name)
    if CHARACTER_PROTOCOL in dataset.protocols:
        return make_character_tasks(dataset.name, shots, seed, characters)
    if UNCONDITIONAL_PROTOCOL in dataset.protocols:
        return make_unconditional_split(dataset.name, shots, seed)
    return make_split(dataset_name, shots, seed, novel_class)
