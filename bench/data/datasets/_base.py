"""Dataset definitions and the file-locating machinery they share.

A dataset is described by data (`ImageDataset`): class names, image shape, provenance and,
for each array it needs (train/test images and labels), the files that can provide it in
order of preference. Every file is checked against known sha256 sums before use, either of
its bytes or of its decompressed content (Debian recompresses the `.gz` wrappers, so only
the content of its Fashion-MNIST files matches upstream).

Search order for each dataset: `$BENCH_DATA_DIR/<name>/`, `/usr/share/datasets/<name>/`,
the user cache, then a download into the user cache (verified the same way).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.sdk.paths import DATA_DIR_ENV, cache_dir, data_search_dirs
from bench.sdk.registry import UnknownNameError


class DataNotFoundError(FileNotFoundError):
    """A dataset's files were found nowhere; the message lists every place looked at."""


class DataIntegrityError(ValueError):
    """A dataset file exists but its checksum matches none of the known ones."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_idx(raw: bytes) -> np.ndarray:
    """Decode an IDX file (the MNIST format): magic (0, 0, type, ndim), big-endian dims, data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataIntegrityError("not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataIntegrityError(f"IDX payload has {len(raw) - offset} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


@dataclass(frozen=True)
class DataFile:
    """One file that can provide one array of a dataset.

    `content_sha256`: accepted sums of the decoded content (the decompressed bytes of a
    `.gz`, or the array bytes of an `.npz` member). `file_sha256`: accepted sums of the file
    itself. A file is accepted when either matches. `urls` are tried in order to download it.
    """

    filename: str
    decode: Callable[[bytes], np.ndarray]
    content_sha256: frozenset[str] = frozenset()
    file_sha256: frozenset[str] = frozenset()
    urls: tuple[str, ...] = ()
    exact: bool = True
    note: str = ""

    def load(self, path: Path) -> tuple[np.ndarray, str]:
        """Read and verify `path`; return the array and the sha256 of its content."""
        raw = path.read_bytes()
        file_sum = sha256_bytes(raw)
        content = gzip.decompress(raw) if self.filename.endswith(".gz") else raw
        content_sum = sha256_bytes(content) if content is not raw else file_sum
        array = self.decode(content)
        if self.filename.endswith(".npz"):
            content_sum = sha256_bytes(np.ascontiguousarray(array).tobytes())
        if file_sum not in self.file_sha256 and content_sum not in self.content_sha256:
            known = sorted(self.file_sha256 | self.content_sha256)
            raise DataIntegrityError(
                f"{path}: checksum mismatch (file sha256 {file_sum}, content sha256 {content_sum}); "
                f"expected one of {known}. The file is corrupt or not the expected release: delete it."
            )
        return array, content_sum


def npz_member(key: str) -> Callable[[bytes], np.ndarray]:
    def decode(raw: bytes) -> np.ndarray:
        import io

        with np.load(io.BytesIO(raw)) as archive:
            if key not in archive.files:
                raise DataIntegrityError(f"npz has no array '{key}' (has {archive.files})")
            return archive[key]

    return decode


@dataclass(frozen=True)
class ArraySlot:
    """An array the dataset needs (e.g. train images) and the files that can provide it, preferred first."""

    name: str
    candidates: tuple[DataFile, ...]


@dataclass
class LoadedData:
    """A dataset in memory: uint8 images (N, C, H, W), int64 labels, and where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    provenance: dict = field(default_factory=dict)
    # Arrays a protocol needs beyond train/test (e.g. Omniglot's evaluation characters).
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset with a train and a test split."""

    name: str
    title: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    slots: tuple[ArraySlot, ...]
    citation: str
    license: str
    default_novel_class: int
    allows_hflip: bool
    # The domain evaluator (bench/features/evaluator.py) is refused below this test accuracy.
    evaluator_min_accuracy: float = 0.9
    # Classes the domain evaluator is trained on: the first `evaluator_classes` (None: all of them).
    evaluator_classes: int | None = None
    evaluator_trained_on: str = "all classes of the train split; tested on the test split"
    # Feature space of fid/kid/precision/recall (`metrics/_fidelity.py`): "domain" (the domain
    # evaluator) or "inception-v3-compat" (where no evaluator can be trained: folders without classes).
    feature_extractor: str = "domain"
    # The dataset whose domain evaluator measures this one (a folder made from it, `folder.json`); None: its own.
    evaluator_dataset: str | None = None
    # With `evaluator_dataset`: the class of that dataset's evaluator the images depict (None: not known).
    evaluator_class: int | None = None
    notes: str = ""
    protocols: tuple[str, ...] = ("novel-class",)
    # One short hand-written sentence per class saying what its images look like: the semantic
    # side information of methods that condition on text (`bench/sdk/semantics.py`); () = none.
    class_descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.class_descriptions and len(self.class_descriptions) != len(self.class_names):
            raise ValueError(
                f"{self.name}: {len(self.class_descriptions)} class descriptions for "
                f"{len(self.class_names)} classes; give one per class (or none)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def evaluator_num_classes(self) -> int:
        return self.num_classes if self.evaluator_classes is None else self.evaluator_classes

    def novel_classes(self, value: str | int | None) -> list[int]:
        """The held-out classes a run covers: the default, one class, or `all` (leave-one-class-out)."""
        if value is None:
            return [self.default_novel_class]
        if str(value).strip().lower() == "all":
            return list(range(self.num_classes))
        return [self.class_index(value)]

    def class_index(self, value: str | int) -> int:
        """A class given as an index or a name (case-insensitive)."""
        if isinstance(value, int) or str(value).strip().lstrip("-").isdigit():
            index = int(value)
            if not 0 <= index < self.num_classes:
                raise ValueError(f"class {index} is out of range for {self.name} (0..{self.num_classes - 1})")
            return index
        lowered = [c.lower() for c in self.class_names]
        if str(value).lower() in lowered:
            return lowered.index(str(value).lower())
        raise UnknownNameError("class", str(value), list(self.class_names))

    def find_files(self) -> dict[str, Path]:
        """Locate one verified-candidate path per slot without reading them (for `bench list`)."""
        found: dict[str, Path] = {}
        for slot in self.slots:
            for _, directory in data_search_dirs(self.name):
                hit = next(
                    (directory / c.filename for c in slot.candidates if (directory / c.filename).is_file()), None
                )
                if hit is not None:
                    found[slot.name] = hit
                    break
        return found

    def load(self, download: bool = True) -> LoadedData:
        """Find, verify and decode every array; download missing files if allowed."""
        arrays: dict[str, np.ndarray] = {}
        provenance: dict[str, dict] = {}
        for slot in self.slots:
            array, source = self._load_slot(slot, download)
            arrays[slot.name] = array
            provenance[slot.name] = source

        def images(a: np.ndarray) -> np.ndarray:
            a = a[:, None] if a.ndim == 3 else a
            if tuple(a.shape[1:]) != self.image_shape:
                raise DataIntegrityError(f"{self.name}: images have shape {a.shape[1:]}, expected {self.image_shape}")
            return np.ascontiguousarray(a, dtype=np.uint8)

        return LoadedData(
            train_images=images(arrays["train_images"]),
            train_labels=arrays["train_labels"].astype(np.int64),
            test_images=images(arrays["test_images"]),
            test_labels=arrays["test_labels"].astype(np.int64),
            provenance=provenance,
        )

    def _load_slot(self, slot: ArraySlot, download: bool) -> tuple[np.ndarray, dict]:
        looked: list[str] = []
        for label, directory in data_search_dirs(self.name):
            for candidate in slot.candidates:
                path = directory / candidate.filename
                looked.append(f"{path} ({label})")
                if path.is_file():
                    array, content_sum = candidate.load(path)
                    return array, self._source(candidate, path, content_sum)
        errors: list[str] = []
        if download:
            target_dir = cache_dir() / "data" / self.name
            for candidate in slot.candidates:
                for url in candidate.urls:
                    try:
                        path = _download(url, target_dir / candidate.filename)
                        array, content_sum = candidate.load(path)
                        return array, self._source(candidate, path, content_sum, url=url)
                    except (OSError, urllib.error.URLError, DataIntegrityError) as exc:
                        errors.append(f"{url}: {exc}")
                        (target_dir / candidate.filename).unlink(missing_ok=True)
        raise DataNotFoundError(self._not_found_message(slot, looked, errors, download))

    def _source(self, candidate: DataFile, path: Path, content_sum: str, url: str | None = None) -> dict:
        source = {"path": str(path), "content_sha256": content_sum, "exact": candidate.exact}
        if candidate.note:
            source["note"] = candidate.note
        if url:
            source["downloaded_from"] = url
        return source

    def _not_found_message(self, slot: ArraySlot, looked: list[str], errors: list[str], download: bool) -> str:
        names = " or ".join(c.filename for c in slot.candidates)
        lines = [f"{self.name}: cannot find {slot.name} ({names}). Looked in:"]
        lines += [f"  - {p}" for p in looked]
        if download and errors:
            lines.append("Download failed:")
            lines += [f"  - {e}" for e in errors]
        elif not download:
            lines.append("Download was not attempted (disabled).")
        lines.append(
            f"Provide the files by pointing {DATA_DIR_ENV} at a folder that holds a '{self.name}/' "
            f"sub-folder with them, by installing them under /usr/share/datasets/{self.name}/, or by "
            f"running once with internet access so they are downloaded into {cache_dir() / 'data' / self.name}."
        )
        return "\n".join(lines)


def _download(url: str, target: Path, timeout: float = 30.0) -> Path:
    """Download to a temporary file next to `target`, then rename: an interrupted download leaves nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
