"""Reading and validating the samples given to `bench evaluate`: an array file, or a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.datasets.folder import as_channels, read_image

# How a folder of images is made to match the dataset: the stated resizing and colour conversion.
FOLDER_CONVERSION = (
    "every 8- or 16-bit image file OpenCV can read (png, jpg, bmp, tiff, ...), in name order; floating-point "
    "images skipped (no agreed range); resized to the dataset's side "
    "(OpenCV INTER_AREA when shrinking, INTER_CUBIC when enlarging); colour to grey by ITU-R 601 luma "
    "(0.299 R + 0.587 G + 0.114 B), grey to RGB by repetition; alpha dropped; 16-bit scaled to 8-bit"
)


class SampleFileError(ValueError):
    """A sample file that cannot be scored; the message says what is wrong."""


def load_samples(path: str | Path, image_shape: tuple[int, int, int], key: str | None = None) -> torch.Tensor:
    """Load an `.npz` (or `.npy`) of images, or a folder of image files, as float32 in [0, 1], shape (N, C, H, W).

    Accepted: uint8 (0..255) or float (0..1) arrays of shape (N, H, W) or (N, C, H, W) (or
    (N, H, W, C) for colour images). An `.npz` must hold one array, or name it with `key`
    (default tried: `samples`). A folder: `load_sample_folder`.
    """
    path = Path(path)
    if path.is_dir():
        return load_sample_folder(path, image_shape)[0]
    if not path.is_file():
        raise SampleFileError(f"{path}: no such file or folder")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SampleFileError(f"{path}: not a readable .npz/.npy file ({exc})") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            files = loaded.files
            if key is None:
                key = "samples" if "samples" in files else (files[0] if len(files) == 1 else None)
            if key is None or key not in files:
                raise SampleFileError(f"{path}: holds arrays {files}; name the one to score with --key")
            try:  # members are read lazily: a damaged archive or a pickled (object) array fails only here
                array = loaded[key]
            except Exception as exc:
                raise SampleFileError(f"{path}: array {key!r} cannot be read ({type(exc).__name__}: {exc})") from exc
    else:
        array = loaded
    return validate_samples(array, image_shape, str(path))


def load_sample_folder(path: Path, image_shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[str]]:
    """The images of a folder (not its sub-folders) converted as `FOLDER_CONVERSION` says, and the names of the files
    skipped because they are not images."""
    channels, height, width = image_shape
    if height != width:
        raise SampleFileError(f"{path}: folders are read for square images; this dataset's are {height}x{width}")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images, skipped = [], []
    for file in files:
        image = read_image(file, height)
        if image is None:
            skipped.append(file.name)
        else:
            images.append(as_channels(image, channels))
    if len(images) < 2:
        raise SampleFileError(
            f"{path}: needs at least 2 readable images, found {len(images)}"
            + (f" ({len(skipped)} files that are not images, e.g. {skipped[0]})" if skipped else "")
        )
    return validate_samples(np.stack(images), image_shape, str(path)), skipped


def validate_samples(
    array: np.ndarray, image_shape: tuple[int, int, int], origin: str = "samples", min_images: int = 2
) -> torch.Tensor:
    channels, height, width = image_shape
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim == 4 and array.shape[1] != channels and array.shape[-1] == channels:
        array = np.moveaxis(array, -1, 1)
    if array.ndim != 4 or tuple(array.shape[1:]) != image_shape:
        raise SampleFileError(
            f"{origin}: images have shape {array.shape}; expected (N, {height}, {width}) or (N, {channels}, {height}, {width})"
        )
    if array.shape[0] < min_images:
        raise SampleFileError(f"{origin}: needs at least {min_images} images, got {array.shape[0]}")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise SampleFileError(f"{origin}: dtype {array.dtype} is not supported; use uint8 (0..255) or float (0..1)")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(1).sum())
        raise SampleFileError(f"{origin}: {bad} images contain NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise SampleFileError(
            f"{origin}: float pixel values must lie in [0, 1], found [{low:.4g}, {high:.4g}] "
            "(rescale images in [-1, 1] with (x + 1) / 2, or save uint8)"
        )
    return torch.from_numpy(array.astype(np.float32))
