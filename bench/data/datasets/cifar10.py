"""CIFAR-10 (Krizhevsky, 2009): 60,000 32x32 RGB images of 10 classes; novel class 9 (truck) by default.

Two sources, preferred in this order wherever a folder is searched:

- `cifar-10-python.tar.gz`, the canonical release (pickled batches; what the download fetches),
  verified by the sha256 of the archive;
- `cifar10_jpeg_q75.tar`, a copy whose every image was RE-ENCODED AS JPEG QUALITY 75
  (`train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg`): lossy, so its records say `exact: false`,
  and its image order differs from the canonical one (class by class, file name order), so the
  same seed draws other support images and the split hash differs. Labels are exact.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable

import numpy as np

from bench.data.datasets import DATASETS
from bench.data.datasets._base import ArraySlot, DataFile, DataIntegrityError, ImageDataset

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CANONICAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CANONICAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_JPEG_TAR_SHA256 = "3b7b466d8138ec7dcf876140e1dd0a52b8f8e8fa23c41a062add1c7469da2bc7"
_BATCHES = {
    "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
    "test": ["cifar-10-batches-py/test_batch"],
}


def _from_pickles(split: str, images: bool) -> Callable[[bytes], np.ndarray]:
    """Decode the canonical archive (already decompressed to tar bytes) into images (N, 3, 32, 32) or labels."""

    def decode(raw: bytes) -> np.ndarray:
        parts = []
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            for name in _BATCHES[split]:
                batch = pickle.load(archive.extractfile(name), encoding="bytes")
                parts.append(batch[b"data"].reshape(-1, 3, 32, 32) if images else np.asarray(batch[b"labels"]))
        return np.concatenate(parts)

    return decode


def _from_jpegs(split: str, images: bool) -> Callable[[bytes], np.ndarray]:
    """Decode the JPEG copy: members `<split>/<class name>/<file>.jpg`, in class then file-name order."""

    def decode(raw: bytes) -> np.ndarray:
        import cv2

        members = []
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            for member in archive.getmembers():
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 3 and parts[0] == split and parts[2].endswith(".jpg"):
                    if parts[1] not in CLASS_NAMES:
                        raise DataIntegrityError(f"unknown CIFAR-10 class folder '{parts[1]}' in {member.name}")
                    members.append((CLASS_NAMES.index(parts[1]), parts[2], member))
            members.sort(key=lambda item: item[:2])
            if not images:
                return np.array([label for label, _, _ in members], dtype=np.int64)
            out = np.empty((len(members), 3, 32, 32), dtype=np.uint8)
            for i, (_, _, member) in enumerate(members):
                bgr = cv2.imdecode(np.frombuffer(archive.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
                if bgr is None or bgr.shape != (32, 32, 3):
                    raise DataIntegrityError(f"{member.name}: not a 32x32 colour JPEG")
                out[i] = bgr[:, :, ::-1].transpose(2, 0, 1)  # OpenCV decodes to BGR
            return out

    return decode


def _slot(name: str, split: str, images: bool) -> ArraySlot:
    return ArraySlot(
        name,
        (
            DataFile(
                "cifar-10-python.tar.gz",
                _from_pickles(split, images),
                file_sha256=frozenset({_CANONICAL_SHA256}),
                urls=(_CANONICAL_URL,),
            ),
            DataFile(
                "cifar10_jpeg_q75.tar",
                _from_jpegs(split, images),
                file_sha256=frozenset({_JPEG_TAR_SHA256}),
                exact=not images,
                note=""
                if not images
                else "every image re-encoded as JPEG quality 75 (lossy); class-then-file-name order",
            ),
        ),
    )


DATASET = DATASETS.register(
    ImageDataset(
        name="cifar10",
        title="CIFAR-10",
        class_names=CLASS_NAMES,
        image_shape=(3, 32, 32),
        slots=(
            _slot("train_images", "train", images=True),
            _slot("train_labels", "train", images=False),
            _slot("test_images", "test", images=True),
            _slot("test_labels", "test", images=False),
        ),
        citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
        license="no explicit licence; distributed by the authors for research",
        default_novel_class=9,
        # Mirrored vehicles and animals are still the same class (the standard CIFAR augmentation).
        allows_hflip=True,
        evaluator_min_accuracy=0.80,
        notes="The staged copy on offline machines is the JPEG-q75 re-encoding; the download fetches the canonical pickles.",
        # What a small colour photo of each class shows (in CLASS_NAMES order).
        class_descriptions=(
            "an airplane: a metal aircraft with long straight wings, a pointed nose and a tail fin, against a blue or grey sky",
            "an automobile: a passenger car with a shiny painted body, windows and four wheels, on a road or a parking lot",
            "a bird: a small feathered animal with a beak, two thin legs and folded wings, perched on a branch or standing on grass",
            "a cat: a furry pet with pointed ears, whiskers, a round face and large eyes, often indoors",
            "a deer: a slender brown animal with long thin legs and large ears, sometimes with antlers, in a forest or a field",
            "a dog: a furry pet with a snout, floppy or upright ears and a tail, often on a lawn or indoors",
            "a frog: a small green or brown amphibian with bulging eyes, wet skin and folded back legs, crouching on the ground",
            "a horse: a large brown or white animal with a long face, a mane, a long tail and four long legs, in a field",
            "a ship: a large boat with a hull and a deck floating on blue water, sometimes in a harbour",
            "a truck: a large heavy vehicle with a square cab in front and a big box or cargo bed behind it, on big wheels",
        ),
    ),
    __name__,
)
