"""`folder:PATH[@SIZE]`: a folder of images as a dataset, with or without one sub-folder per class.

Every readable image (OpenCV: png, jpg, bmp, ...) is read, turned into grey (when every image is
grey) or RGB, and resized to SIZE x SIZE (default 64; `cv2.INTER_AREA` when shrinking,
`cv2.INTER_CUBIC` when enlarging). Unreadable files are skipped, counted and named in the
provenance of every record, and reported with a warning.

- With class sub-folders (`PATH/<class>/*`): each class is divided into train (80%) and test
  (20%, at least one image) by a fixed seeded permutation, so the novel-class protocol applies
  unchanged: support from the novel class's train part, reference = its test part.
- Without (`PATH/*`, images only): the unconditional protocol (`bench.data.splits.make_unconditional_split`)
  of the IMLE/FastGAN papers. The images are divided once, by a fixed seed, into a train part
  (90%) and a held-out part (10%, at least one image): train = `train_images`, held-out =
  `test_images`, all labelled 0. There are no classes, so no domain evaluator: the
  distribution metrics use InceptionV3 features (the weights must be available), unless the
  folder's card says otherwise.

The folder's card (`PATH/folder.json`, optional, not an image): `{"evaluator": DATASET, "source":
{"class": CLASS, ...}}` says that the images come from DATASET, whose pinned domain evaluator then
measures the folder (its images must have DATASET's shape: pass the matching @SIZE), and where
they came from; CLASS (optional) is the evaluator's class they depict (`class_consistency`).
`write_folder` makes such a folder from a class of a dataset at hand (`bench folder`).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.datasets._base import DataNotFoundError, ImageDataset, LoadedData

PREFIX = "folder:"
DEFAULT_SIZE = 64
TEST_FRACTION = 0.2
HELD_OUT_FRACTION = 0.1  # of a folder without classes: the backtracking targets
DIVISION_SEED = 0  # the train/test division is part of the dataset's definition, not of a run's seed
CARD = "folder.json"  # the folder's card (module docstring): never read as an image


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != CARD)


def parse(spec: str) -> tuple[Path, int]:
    body = spec.strip()[len(PREFIX) :]
    size = DEFAULT_SIZE
    if "@" in body and body.rsplit("@", 1)[1].isdigit():
        body, size_text = body.rsplit("@", 1)
        size = int(size_text)
    if size < 8:
        raise ValueError(f"{spec}: image size {size} is too small (at least 8)")
    root = Path(body).expanduser().resolve()
    if not root.is_dir():
        raise DataNotFoundError(f"{spec}: {root} is not a folder")
    return root, size


def read_image(path: Path, size: int) -> np.ndarray | None:
    """(H, W) grey or (H, W, 3) RGB uint8 resized to size x size; None when OpenCV cannot read it as an 8- or
    16-bit image of 1 to 4 channels (grey, grey + alpha, colour, colour + alpha)."""
    import cv2

    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # a decoder that fails loudly rather than returning None
        return None
    if image is None or image.size == 0 or image.dtype not in (np.uint8, np.uint16):
        return None  # floating-point and signed images (TIFF, ...) have no agreed range: not guessed
    if image.ndim == 3 and not 1 <= image.shape[2] <= 4:
        return None
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    if image.ndim == 3:
        if image.shape[2] <= 2:  # grey, or grey + alpha
            image = image[:, :, 0]
        else:
            image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2RGB)  # alpha dropped
    shrinking = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


@dataclass(frozen=True)
class FolderDataset(ImageDataset):
    root: Path = Path(".")
    image_size: int = DEFAULT_SIZE

    def find_files(self) -> dict[str, Path]:
        return {slot: self.root for slot in ("train_images", "train_labels", "test_images", "test_labels")}

    @property
    def has_classes(self) -> bool:
        return "novel-class" in self.protocols

    def load(self, download: bool = True) -> LoadedData:
        images, labels, unreadable = [], [], []
        folders = [self.root / c for c in self.class_names] if self.has_classes else [self.root]
        for label, folder in enumerate(folders):
            for path in _image_files(folder):
                image = read_image(path, self.image_size)
                if image is None:
                    unreadable.append(str(path.relative_to(self.root)))
                    continue
                images.append(image)
                labels.append(label)
        if unreadable:
            warnings.warn(f"{self.name}: {len(unreadable)} unreadable files skipped: {unreadable[:10]}", stacklevel=2)
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=len(folders))
        if (counts < 2).any():  # one image cannot be divided into a train and a test part
            short = [str(folders[i].relative_to(self.root.parent)) for i in np.flatnonzero(counts < 2)]
            raise ValueError(
                f"{self.root}: every {'class folder' if self.has_classes else 'folder'} needs at least 2 readable "
                f"images; too few in {short[:10]}"
                + (f" ({len(unreadable)} unreadable files skipped)" if unreadable else "")
            )
        channels = self.image_shape[0]
        array = np.stack([as_channels(image, channels) for image in images])
        test = np.zeros(len(labels), dtype=bool)
        rng = np.random.default_rng(DIVISION_SEED)
        fraction = TEST_FRACTION if self.has_classes else HELD_OUT_FRACTION
        for label in range(len(self.class_names)):
            members = np.flatnonzero(labels == label)
            n_test = max(1, int(round(fraction * len(members))))
            test[rng.permutation(members)[:n_test]] = True
        digest = hashlib.sha256(array.tobytes() + labels.tobytes() + test.tobytes()).hexdigest()
        source = {
            "path": str(self.root),
            "content_sha256": digest,
            "exact": True,
            "note": f"{len(labels)} images, {len(self.class_names) if self.has_classes else 'no'} classes, resized to "
            f"{self.image_size}x{self.image_size} (INTER_AREA shrinking, INTER_CUBIC enlarging); seeded "
            f"{1 - fraction:.0%}/{fraction:.0%} " + ("train/test per class" if self.has_classes else "train/held-out"),
            "unreadable_files": unreadable,
        }
        return LoadedData(
            array[~test],
            labels[~test],
            array[test],
            labels[test],
            provenance={slot: source for slot in ("train_images", "train_labels", "test_images", "test_labels")},
        )


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB -> (channels, H, W): grey repeated into RGB, RGB to grey by ITU-R 601 luma."""
    if image.ndim == 3 and channels == 1:
        import cv2

        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[None]
    if image.ndim == 2:
        image = image[None]
        return np.repeat(image, channels, axis=0) if channels == 3 else image
    return image.transpose(2, 0, 1)


def folder_dataset(spec: str, lookup: Callable[[str], ImageDataset]) -> FolderDataset:
    """The dataset behind `folder:PATH[@SIZE]`, named `folder-<folder name>-<hash of its card, or else its path, and
    size>`; `lookup` finds the registered dataset a folder card names."""
    root, size = parse(spec)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) == 1:
        raise ValueError(
            f"{spec}: the novel-class protocol needs at least 2 class sub-folders, found {classes}; "
            f"for one set of images, put them directly in {root}"
        )
    stem = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-") or "images"
    card_path = root / CARD
    # A carded folder is defined by its card (the dataset, class, indices and seed of `write_folder`), so its name
    # is the same on every machine and in every place; any other folder only by where it is.
    identity = card_path.read_text() if not classes and card_path.is_file() else str(root)
    key = hashlib.sha256(f"{identity}|{size}".encode()).hexdigest()[:8]
    common = dict(
        image_size=size,
        root=root,
        slots=(),
        citation=f"local image folder {root}",
        license="that of the images",
        allows_hflip=False,
    )  # unknown content: no mirror symmetry assumed
    if not classes:
        if not _image_files(root):
            raise ValueError(f"{spec}: {root} holds no files and no class sub-folders")
        image_shape = (3 if _any_colour([root], size) else 1, size, size)
        return FolderDataset(
            name=f"folder-{stem}-{key}",
            title=f"Image folder {root} (no classes)",
            class_names=(root.name,),
            image_shape=image_shape,
            default_novel_class=0,
            notes="made from a folder of images without classes: the unconditional protocol",
            protocols=("unconditional",),
            evaluator_classes=0,
            **_ruler(spec, root, image_shape, lookup),
            **common,
        )
    return FolderDataset(
        name=f"folder-{stem}-{key}",
        title=f"Image folder {root}",
        class_names=tuple(classes),
        image_shape=(3 if _any_colour([root / c for c in classes], size) else 1, size, size),
        default_novel_class=len(classes) - 1,
        notes="made from a folder of images with one sub-folder per class",
        **common,
    )


def _ruler(spec: str, root: Path, image_shape: tuple[int, int, int], lookup: Callable[[str], ImageDataset]) -> dict:
    """The feature space of a folder without classes: InceptionV3, or the evaluator of the dataset its card names."""
    card_path = root / CARD
    if not card_path.is_file():
        return {
            "evaluator_trained_on": "nothing: a folder without classes has no labels to train a domain evaluator on",
            "feature_extractor": "inception-v3-compat",
        }
    try:
        card = json.loads(card_path.read_text())
        name = card["evaluator"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f'{spec}: {card_path} is not a folder card ({{"evaluator": DATASET, ...}}): {exc}') from exc
    source = lookup(name)  # an unknown name lists the valid ones
    if source.image_shape != image_shape:
        raise ValueError(
            f"{spec}: its card names the {name} evaluator, which measures {source.image_shape} images, but the folder "
            f"reads as {image_shape}; pass @{source.image_shape[1]}"
        )
    described = card.get("source", {}).get("class") if isinstance(card.get("source"), dict) else None
    return {
        "evaluator_dataset": name,
        "evaluator_class": None if described is None else source.class_index(described),
        "evaluator_trained_on": f"the {name} evaluator's (the folder's card says its images come from {name})",
        "feature_extractor": "domain",
    }


def write_folder(dataset: ImageDataset, class_name: str | int, images: int, seed: int, out: Path) -> dict:
    """Write `images` train images of one class of a dataset at hand as PNG files into the empty or new folder `out`,
    drawn by `default_rng(seed)`, with the card naming the dataset (its evaluator measures the folder); return the
    card."""
    import cv2

    label = dataset.class_index(class_name)
    data = dataset.load()
    members = np.flatnonzero(data.train_labels == label)
    if not 1 <= images <= len(members):
        raise ValueError(
            f"{dataset.name} class {dataset.class_names[label]!r} has {len(members)} train images; asked {images}"
        )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; the folder must hold only the images written here")
    out.mkdir(parents=True, exist_ok=True)
    chosen = np.sort(np.random.default_rng(seed).choice(members, images, replace=False))
    for index in chosen:
        image = data.train_images[index].transpose(1, 2, 0)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image[:, :, 0]
        cv2.imwrite(str(out / f"{dataset.name}-train-{index:06d}.png"), bgr)
    card = {
        "evaluator": dataset.name,
        "source": {
            "dataset": dataset.name,
            "class": dataset.class_names[label],
            "split": "train",
            "indices": [int(i) for i in chosen],
            "seed": seed,
            "size": dataset.image_shape[1],
        },
    }
    (out / CARD).write_text(json.dumps(card, indent=1) + "\n")
    return card


def _any_colour(folders: list[Path], size: int) -> bool:
    for folder in folders:
        for path in _image_files(folder):
            image = read_image(path, size) if path.is_file() else None
            if image is not None and image.ndim == 3 and not (image == image[:, :, :1]).all():
                return True
    return False
