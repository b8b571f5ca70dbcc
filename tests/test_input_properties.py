"""Property-based tests (hypothesis) of every reader of files the suite did not write: the sample loader of
`bench evaluate` (arrays, `.npy` / `.npz` files, folders of images) and the folder dataset. Each input ends in
the images the documented contract says, or in a clean error (`SampleFileError`, or `ValueError` for a dataset)
whose message names the file; never in another exception. Kept to a few hundred small cases: CI runs them all."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bench.data.datasets import DATASETS
from bench.data.datasets.folder import folder_dataset
from bench.harness.samples import SampleFileError, load_sample_folder, load_samples, validate_samples

SHAPE = (1, 8, 8)  # a small grey dataset shape; the rules do not depend on the size
RGB_SHAPE = (3, 8, 8)
CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = [np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def arrays(draw, image_shape=SHAPE):
    """Arrays near the accepted layouts (so that acceptance is often reached) and arbitrary ones."""
    channels, height, width = image_shape
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    count = draw(st.integers(0, 4))
    layouts = {
        "N,H,W": (count, height, width),
        "N,C,H,W": (count, channels, height, width),
        "N,H,W,C": (count, height, width, channels),
    }
    layout = draw(st.sampled_from([*layouts, "any"]))
    shape = layouts.get(layout) or draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9))
    if dtype.kind == "f" and draw(st.booleans()):
        elements = st.floats(0.0, 1.0, width=8 * dtype.itemsize)  # in range, so the float path is accepted
    else:
        elements = hnp.from_dtype(dtype)  # any value, NaN and infinities included
    return draw(hnp.arrays(dtype, shape, elements=elements))


def meets_contract(array: np.ndarray, image_shape) -> bool:
    """`load_samples`'s documented contract, written independently of `validate_samples`."""
    channels = image_shape[0]
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] != channels and array.shape[3] == channels:
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1:] != image_shape or len(array) < 2:
        return False
    if array.dtype == np.uint8:
        return True
    return array.dtype.kind == "f" and bool(np.isfinite(array).all()) and array.min() >= 0 and array.max() <= 1


def assert_same_images(loaded, array: np.ndarray, image_shape) -> None:
    assert loaded.dtype.is_floating_point and tuple(loaded.shape) == (len(array), *image_shape)
    values = loaded.numpy()
    assert values.min() >= 0 and values.max() <= 1
    expected = array.astype(np.float64) / (255 if array.dtype == np.uint8 else 1)
    if expected.ndim == 4 and expected.shape[1:] != image_shape:
        expected = expected.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(values, expected.reshape(values.shape), rtol=0, atol=1e-6)


@CASES
@given(array=arrays(), image_shape=st.sampled_from([SHAPE, RGB_SHAPE]))
def test_an_array_is_accepted_exactly_when_it_meets_the_contract_and_then_gives_its_own_pixels(array, image_shape):
    if array.ndim == 4 and array.shape[1] == 1 and image_shape == RGB_SHAPE:
        array = np.repeat(array, 3, axis=1)
    try:
        loaded = validate_samples(array, image_shape, "x.npz")
    except SampleFileError as error:
        assert str(error).startswith("x.npz: ")
        assert not meets_contract(array, image_shape)
    else:
        assert meets_contract(array, image_shape)
        assert_same_images(loaded, array, image_shape)


def _write(folder: Path, array: np.ndarray, container: str) -> Path:
    if container == ".npy":
        np.save(folder / "s.npy", array)
        return folder / "s.npy"
    arrays = {"samples": array} if container == ".npz samples" else {"a": array}
    if container == ".npz two":
        arrays["b"] = array
    np.savez(folder / "s.npz", **arrays)
    return folder / "s.npz"


@CASES
@given(
    array=arrays(),
    container=st.sampled_from([".npy", ".npz samples", ".npz one", ".npz two"]),
    damage=st.sampled_from([None, "truncate", "flip", "garbage"]),
    where=st.floats(0.0, 1.0),
)
def test_a_sample_file_in_any_state_gives_its_images_or_a_clean_error(array, container, damage, where):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), array, container)
        data = bytearray(path.read_bytes())
        position = min(int(where * len(data)), len(data) - 1)
        if damage == "truncate":
            del data[position:]
        elif damage == "flip":
            data[position] ^= 0xFF
        elif damage == "garbage":
            data[:] = bytes(range(256)) * 3
        path.write_bytes(bytes(data))
        try:
            loaded = load_samples(path, SHAPE)
        except SampleFileError as error:
            assert str(error).startswith(str(path))
            if damage is None:  # an intact file fails only for its content or an ambiguous archive
                assert container == ".npz two" or not meets_contract(array, SHAPE)
        else:
            assert tuple(loaded.shape[1:]) == SHAPE and 0 <= loaded.min() and loaded.max() <= 1
            if damage is None:
                assert_same_images(loaded, array, SHAPE)


class _RunsCode:
    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize("container", [".npy", ".npz"])
def test_pickled_objects_in_a_sample_file_are_refused_by_name_and_never_run(tmp_path, monkeypatch, container):
    monkeypatch.chdir(tmp_path)
    objects = np.array([_RunsCode(), _RunsCode()], dtype=object)
    path = tmp_path / f"s{container}"
    if container == ".npy":
        np.save(path, objects, allow_pickle=True)
    else:
        np.savez(path, samples=objects)
    with pytest.raises(SampleFileError, match=rf"^{path}: .*(pickle|object)"):
        load_samples(path, SHAPE)
    raw = tmp_path / "raw.npy"  # a bare pickle named like an array file
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(SampleFileError, match=rf"^{raw}: not a readable"):
        load_samples(raw, SHAPE)
    assert not (tmp_path / "pwned").exists()


# Folders: images of every bit depth and channel count OpenCV writes, plus files that are not images.
IMAGE_KINDS = [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8), (".tiff", np.uint16), (".bmp", np.uint8)]


@st.composite
def folder_entries(draw):
    kind = draw(st.sampled_from(["image", "float tiff", "not an image", "empty", "truncated image", "folder"]))
    if kind in ("image", "truncated image"):
        extension, dtype = draw(st.sampled_from(IMAGE_KINDS))
        channels = draw(st.sampled_from([1, 3, 4] if extension != ".jpg" else [1, 3]))
        height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
        shape = (height, width) if channels == 1 else (height, width, channels)
        # Pixels from a drawn seed: drawing them one by one costs more than all the reading under test.
        pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, np.iinfo(dtype).max, shape, dtype)
        return kind, extension, pixels, draw(st.floats(0.05, 0.95))
    if kind == "float tiff":
        return kind, ".tiff", np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random((4, 5), np.float32), None
    if kind == "not an image":
        # A fixed text prefix keeps the bytes from being some image format by chance.
        return (
            kind,
            draw(st.sampled_from([".png", ".jpg", ".txt", ""])),
            b"# notes\n" + draw(st.binary(max_size=64)),
            None,
        )
    return kind, "", None, None


def _materialise(folder: Path, entries) -> tuple[int, int, set[str]]:
    """Writes the entries; returns (sure images, possibly readable damaged images, names that are not images)."""
    images = damaged = 0
    not_images = set()
    for index, (kind, extension, payload, cut) in enumerate(entries):
        path = folder / f"{index:02d}{extension}"
        if kind == "folder":
            path.mkdir()
            (path / "inside.png").write_bytes(cv2.imencode(".png", np.zeros((3, 3), np.uint8))[1].tobytes())
        elif kind == "empty":
            path.touch()
            not_images.add(path.name)
        elif kind == "not an image":
            path.write_bytes(payload)
            not_images.add(path.name)
        else:
            assert cv2.imwrite(str(path), payload)
            if kind == "truncated image":
                data = path.read_bytes()
                path.write_bytes(data[: max(1, int(cut * len(data)))])
                damaged += 1
            elif kind == "float tiff":
                not_images.add(path.name)
            else:
                images += 1
    return images, damaged, not_images


@CASES
@given(entries=st.lists(folder_entries(), max_size=6), image_shape=st.sampled_from([SHAPE, RGB_SHAPE]))
def test_a_folder_of_anything_gives_its_images_resized_or_a_clean_error(entries, image_shape):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images, damaged, not_images = _materialise(folder, entries)
        try:
            loaded, skipped = load_sample_folder(folder, image_shape)
        except SampleFileError as error:
            assert str(error).startswith(f"{folder}: needs at least 2 readable images")
            assert images < 2
        else:
            assert images + damaged >= len(loaded) >= max(images, 2)
            assert tuple(loaded.shape[1:]) == image_shape and 0 <= loaded.min() and loaded.max() <= 1
            assert not_images <= set(skipped) and len(skipped) == len(not_images) + damaged + images - len(loaded)


@CASES
@pytest.mark.filterwarnings("ignore:folder-data-.*unreadable files skipped")
@given(classes=st.lists(st.lists(folder_entries(), max_size=4), min_size=0, max_size=3))
def test_a_folder_dataset_of_anything_loads_or_says_which_folder_is_short(classes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        sure, possible = [], []  # per class: images that must be read, and those that may be (damaged ones)
        for index, entries in enumerate(classes):
            (root / f"class{index}").mkdir()
            images, damaged, _ = _materialise(root / f"class{index}", [e for e in entries if e[0] != "folder"])
            sure.append(images)
            possible.append(images + damaged)
        try:
            dataset = folder_dataset(f"folder:{root}@8", DATASETS.get)
            loaded = dataset.load()
        except ValueError as error:
            assert str(root) in str(error)
            assert len(classes) in (0, 1) or min(sure) < 2
        else:
            assert len(classes) >= 2 and min(possible) >= 2
            assert loaded.train_images.shape[1:] == loaded.test_images.shape[1:] == dataset.image_shape
            assert set(np.unique(loaded.test_labels)) == set(range(len(classes)))  # every class has a test image


def test_a_folder_with_one_readable_image_among_files_says_how_many_were_skipped(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(SampleFileError, match=r"found 1 \(1 files that are not images, e.g. b.txt\)"):
        load_sample_folder(tmp_path, SHAPE)


def test_an_npz_written_to_memory_and_cut_at_every_tenth_byte_never_escapes_as_another_error(tmp_path):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, samples=np.full((3, 8, 8), 7, np.uint8))
    data = buffer.getvalue()
    for end in range(0, len(data), max(1, len(data) // 10)):
        (tmp_path / "s.npz").write_bytes(data[:end])
        with pytest.raises(SampleFileError):
            load_samples(tmp_path / "s.npz", SHAPE)
