"""Omniglot (Lake, Salakhutdinov and Tenenbaum): 1,623 hand-written characters of 50 alphabets, 20 drawers each.

The standard split of Lake et al.: the background set (964 characters of 30 alphabets) is what
methods learn from; the evaluation set (659 characters of 20 alphabets) supplies the novel
characters (protocol `omniglot-characters`, see `bench.data.splits.make_character_tasks`).

Images: the original 105x105 binary drawings, inverted so that ink is white on black (like
MNIST), then resized to 28x28 with OpenCV's `INTER_AREA` (pixel-area averaging), kept as 8-bit
grey levels. Likelihood metrics binarise them at 0.5, as for every grey-scale dataset.

Class indices: 0..963 are the background characters, 964..1622 the evaluation characters, in
the order of the source files (character id - 1 of `alphabet_id_ranges.tsv`).

Arrays of the loaded dataset:
- `train_images` / `train_labels`: background characters, drawers 0..15;
- `test_images` / `test_labels`: background characters, drawers 16..19 (held-out drawers: the
  domain evaluator is tested on them);
- `extra["evaluation_images"]`: (659, 20, 1, 28, 28), evaluation character x drawer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.datasets import DATASETS
from bench.data.datasets._base import ArraySlot, DataFile, DataIntegrityError, ImageDataset, LoadedData, npz_member

SIZE = 28
DRAWERS = 20
EVALUATOR_TRAIN_DRAWERS = 16  # drawers 0..15 train the domain evaluator; 16..19 test it

# (alphabet, characters) in the order of the source files (alphabet_id_ranges.tsv of the staged copy).
BACKGROUND_ALPHABETS = (
    ("Arcadian", 26),
    ("Armenian", 41),
    ("Asomtavruli (Georgian)", 40),
    ("Balinese", 24),
    ("Bengali", 46),
    ("Blackfoot (Canadian Aboriginal Syllabics)", 14),
    ("Braille", 26),
    ("Cyrillic", 33),
    ("Early Aramaic", 22),
    ("Syriac (Estrangelo)", 23),
    ("Anglo-Saxon Futhorc", 29),
    ("Futurama", 26),
    ("Grantha", 43),
    ("Greek", 24),
    ("Gujarati", 48),
    ("Hebrew", 22),
    ("Japanese (Hiragana)", 52),
    ("Inuktitut (Canadian Aboriginal Syllabics)", 16),
    ("Malay (Jawi-Arabic)", 40),
    ("Japanese (Katakana)", 47),
    ("Korean", 40),
    ("Latin", 26),
    ("Alphabet of the Magi", 20),
    ("Mkhedruli (Georgian)", 41),
    ("Burmese (Myanmar)", 34),
    ("N Ko", 33),
    ("Ojibwe (Canadian Aboriginal Syllabics)", 14),
    ("Sanskrit", 42),
    ("Tagalog", 17),
    ("Tifinagh", 55),
)
EVALUATION_ALPHABETS = (
    ("Angelic", 20),
    ("Atemayar Qelisayer", 26),
    ("Atlantean", 26),
    ("Aurek-Besh", 26),
    ("Avesta", 26),
    ("Ge ez", 26),
    ("Glagolitic", 45),
    ("Gurmukhi", 45),
    ("Kannada", 41),
    ("Keble", 26),
    ("Malayalam", 47),
    ("Manipuri", 40),
    ("Mongolian", 30),
    ("Old Church Slavonic (Cyrillic)", 45),
    ("Oriya", 46),
    ("Syriac (Serto)", 23),
    ("Sylheti", 28),
    ("Tengwar", 25),
    ("Tibetan", 42),
    ("ULOG", 26),
)


def _character_names(alphabets) -> tuple[str, ...]:
    return tuple(f"{alphabet} {index:02d}" for alphabet, count in alphabets for index in range(1, count + 1))


BACKGROUND_NAMES = _character_names(BACKGROUND_ALPHABETS)
EVALUATION_NAMES = _character_names(EVALUATION_ALPHABETS)
N_BACKGROUND, N_EVALUATION = len(BACKGROUND_NAMES), len(EVALUATION_NAMES)


def area_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights of OpenCV's INTER_AREA along one axis (pixel-area averaging)."""
    import cv2

    return cv2.resize(np.eye(source, dtype=np.float32), (source, target), interpolation=cv2.INTER_AREA)


def shrink(drawings: np.ndarray) -> np.ndarray:
    """(..., 105, 105) bool with True = background -> (..., 1, 28, 28) uint8 with ink = 255.

    INTER_AREA is separable (each output pixel averages the source area it covers), so all
    drawings are resized at once as `A @ image @ A.T`, identical to `cv2.resize(image, (28, 28),
    interpolation=cv2.INTER_AREA)` per image up to float rounding (tested).
    """
    height, width = drawings.shape[-2:]
    lead = drawings.shape[:-2]
    flat = drawings.reshape(-1, height, width)
    rows, cols = area_matrix(height, SIZE), area_matrix(width, SIZE)
    out = np.empty((len(flat), SIZE, SIZE), dtype=np.uint8)
    for start in range(0, len(flat), 1024):  # in chunks: float copies of all drawings would take ~1 GB
        ink = (~flat[start : start + 1024]).astype(np.float32)
        out[start : start + 1024] = np.round(np.einsum("ih,nhw,jw->nij", rows, ink, cols, optimize=True) * 255)
    return out.reshape(*lead, 1, SIZE, SIZE)


def _drawings(raw: bytes) -> np.ndarray:
    images = npz_member("images")(raw)
    if images.dtype != np.bool_ or images.ndim != 4 or images.shape[1:] != (DRAWERS, 105, 105):
        raise DataIntegrityError(f"expected bool images (characters, 20, 105, 105), got {images.dtype} {images.shape}")
    return images


_SOURCE_NOTE = (
    "pixel-exact copy of the original PNGs of brendenlake/omniglot, packed as npz (GitHub bitsandscraps/omniglot)"
)


@dataclass(frozen=True)
class OmniglotDataset(ImageDataset):
    """Omniglot with the character-level protocol; see the module docstring for the arrays."""

    def load(self, download: bool = True) -> LoadedData:
        arrays, provenance = {}, {}
        for slot in self.slots:
            arrays[slot.name], provenance[slot.name] = self._load_slot(slot, download)
        background, evaluation = arrays["background"], arrays["evaluation"]
        if background.shape[0] != N_BACKGROUND or evaluation.shape[0] != N_EVALUATION:
            raise DataIntegrityError(
                f"omniglot: expected {N_BACKGROUND} background and {N_EVALUATION} evaluation characters, "
                f"got {background.shape[0]} and {evaluation.shape[0]}"
            )
        background, evaluation = shrink(background), shrink(evaluation)
        labels = np.broadcast_to(np.arange(N_BACKGROUND)[:, None], (N_BACKGROUND, DRAWERS))
        train, test = slice(0, EVALUATOR_TRAIN_DRAWERS), slice(EVALUATOR_TRAIN_DRAWERS, DRAWERS)
        return LoadedData(
            train_images=np.ascontiguousarray(background[:, train].reshape(-1, 1, SIZE, SIZE)),
            train_labels=np.ascontiguousarray(labels[:, train].reshape(-1)).astype(np.int64),
            test_images=np.ascontiguousarray(background[:, test].reshape(-1, 1, SIZE, SIZE)),
            test_labels=np.ascontiguousarray(labels[:, test].reshape(-1)).astype(np.int64),
            provenance=provenance,
            extra={"evaluation_images": evaluation},
        )

    def novel_classes(self, value) -> list[int]:
        if value is not None:
            raise ValueError(
                "omniglot runs a seeded set of evaluation characters per run (protocol omniglot-characters); "
                "choose how many with --characters instead of --novel-class"
            )
        return [self.default_novel_class]


def _npz(filename: str, file_sha256: str) -> DataFile:
    return DataFile(filename, _drawings, file_sha256=frozenset({file_sha256}), note=_SOURCE_NOTE)


DATASET = DATASETS.register(
    OmniglotDataset(
        name="omniglot",
        title="Omniglot",
        class_names=BACKGROUND_NAMES + EVALUATION_NAMES,
        image_shape=(1, SIZE, SIZE),
        slots=(
            ArraySlot(
                "background",
                (_npz("images_background.npz", "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199"),),
            ),
            ArraySlot(
                "evaluation",
                (_npz("images_evaluation.npz", "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276"),),
            ),
        ),
        citation="Lake, Salakhutdinov and Tenenbaum, Human-level concept learning through probabilistic program "
        "induction, Science 2015 (data: github.com/brendenlake/omniglot)",
        license="MIT",
        default_novel_class=N_BACKGROUND,  # unused by its protocol: the novel characters are a seeded draw
        allows_hflip=False,  # mirrored characters are other characters (or none)
        evaluator_min_accuracy=0.8,
        evaluator_classes=N_BACKGROUND,
        evaluator_trained_on=(
            f"the {N_BACKGROUND} background characters, drawers 0-{EVALUATOR_TRAIN_DRAWERS - 1}; "
            f"tested on the held-out drawers {EVALUATOR_TRAIN_DRAWERS}-{DRAWERS - 1}; never sees an evaluation character"
        ),
        notes=f"105x105 drawings inverted (ink = white) and resized to {SIZE}x{SIZE} with cv2.INTER_AREA",
        protocols=("omniglot-characters",),
    ),
    __name__,
)
