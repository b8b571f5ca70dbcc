"""BRISQUE: no-reference image quality of each sample (OpenCV contrib, LIVE-trained model).

Mittal, Moorthy and Bovik, No-Reference Image Quality Assessment in the Spatial Domain, IEEE TIP
2012. Implementation: OpenCV contrib's `cv2.quality.QualityBRISQUE` (`opencv-contrib-python-headless`
4.x; 5.0 has no `cv2.ml`) with the model trained on LIVE-R2 that Debian ships in `opencv-data`
(`/usr/share/opencv4/quality/brisque_model_live.yml` and `brisque_range_live.yml`; another folder
holding the same two files can be given with `BENCH_BRISQUE_MODEL_DIR`). Scores run from 0 (best)
to 100 (worst); OpenCV clamps to that range.

Measurement, in order:
- Resize: BRISQUE was built for natural photographs; its features are taken at full and half
  size with a 7x7 window, which at 28x28 leaves a 14x14 second scale. Images whose shorter side is
  below 64 pixels are upscaled by a fixed factor of 2 (28x28 -> 56x56, 32x32 -> 64x64) with
  bicubic interpolation (`torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`,
  then clamped to [0, 1]); larger images are scored at their own size. Factor 2 was chosen by
  measurement on Fashion-MNIST, MNIST and CIFAR-10 test images. At x2 the real test images score
  about 41 (Fashion-MNIST), 44 (MNIST) and 40 (CIFAR-10); Gaussian blur (sigma 0.7 to 2.5 px
  before upscaling), added Gaussian noise of std 0.1 to 0.3 and uniform noise (about 100 on the
  28x28 sets, 71 on CIFAR-10) all score worse. One known BRISQUE quirk remains: mild noise (std
  0.05) makes upscaled Fashion-MNIST score better (35). At x4 (112) and x8 (224) upsampled uniform
  noise scored about as well as or better than the real images (the upsampling smooths it into
  a texture the model finds natural), and non-integer factors (28 -> 42 or 70, 32 -> 56) were
  erratic.
- Scale: [0, 1] floats are multiplied by 255 and rounded to uint8 (`(x * 255).round()`, the
  convention the runner uses to store samples), i.e. scored as the 8-bit image file they would be
  saved as. OpenCV divides by 255 internally ([0, 1] input would give a meaningless score).
  Rounding matters: OpenCV converts 8-bit colour to grey with rounding to whole grey levels, and
  unrounded float input moved the scores of scikit-image's colour photographs by up to 1.3 points.
- Colour: BRISQUE uses luminance only. Grey images are passed as one channel; RGB images are
  passed as HxWx3 in OpenCV's BGR channel order, so that OpenCV's own `COLOR_BGR2GRAY`
  conversion weights the channels correctly.
- Score: features from `cv2.quality.QualityBRISQUE_computeFeatures` per image (OpenCV has no
  batch API), then one `cv2.ml.SVM.predict` call on all of them with the model file, after
  scaling each feature to [-1, 1] with the range file and clamping the prediction to [0, 100]:
  the same steps as `QualityBRISQUE::compute` (tests/test_brisque.py compares the two; they gave
  identical scores on scikit-image's photographs and on 28x28 images upscaled here). The steps
  are split because `compute` silently returns 0 (the best score) when the features are not
  finite, which happens for flat images and for other degenerate ones (a step edge, stripes, a
  ramp).
- Failures: a flat sample (every channel constant after resizing and rounding, e.g. the
  all-black output of a collapsed generator), a sample with non-finite features or one OpenCV
  rejects is a per-sample failure, counted in `n_failed` (flat ones also in `n_failed_flat`) and
  left out of the mean. If every sample fails the metric raises.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metrics import EvalInputs, Metric, MetricResult, MissingOptionalPart, register

MODEL_DIR = Path("/usr/share/opencv4/quality")
MODEL_FILE = "brisque_model_live.yml"
RANGE_FILE = "brisque_range_live.yml"
UPSCALE_BELOW = 64  # images whose shorter side is below this many pixels are upscaled
UPSCALE_FACTOR = 2
CHUNK = 256  # images resized and converted at once
_INSTALL = (
    "install OpenCV contrib 4.x with `pip install 'opencv-contrib-python-headless>=4.8,<5'` "
    "(and uninstall opencv-python / opencv-python-headless if they shadow it)"
)


def model_dir() -> Path:
    """Where the LIVE model files are read from: `BENCH_BRISQUE_MODEL_DIR`, else Debian's opencv-data folder."""
    return Path(os.environ.get("BENCH_BRISQUE_MODEL_DIR") or MODEL_DIR)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _load(model_dir: Path):
    """OpenCV, the SVM, the feature ranges and the card facts; loaded once per folder."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingOptionalPart(f"the brisque metric needs OpenCV: {_INSTALL}") from exc
    if not hasattr(cv2, "quality") or not hasattr(cv2, "ml"):
        raise MissingOptionalPart(
            f"the installed OpenCV {cv2.__version__} has no cv2.quality/cv2.ml (not a contrib 4.x build): {_INSTALL}"
        )
    model_path, range_path = model_dir / MODEL_FILE, model_dir / RANGE_FILE
    missing = [str(p) for p in (model_path, range_path) if not p.is_file()]
    if missing:
        raise MissingOptionalPart(
            f"BRISQUE model files not found: {', '.join(missing)}. Install them with "
            "`apt-get update && apt-get install -y opencv-data` (Debian/Ubuntu), or set BENCH_BRISQUE_MODEL_DIR "
            f"to a folder holding {MODEL_FILE} and {RANGE_FILE} (opencv_contrib modules/quality/samples)"
        )
    svm = cv2.ml.SVM_load(str(model_path))
    storage = cv2.FileStorage(str(range_path), cv2.FILE_STORAGE_READ)
    feature_range = storage.getNode("range").mat()
    storage.release()
    if feature_range is None or feature_range.shape != (2, 36):
        raise ValueError(f"{range_path} has no 2x36 'range' matrix")
    try:
        from importlib.metadata import version

        package = f"opencv-contrib-python-headless {version('opencv-contrib-python-headless')}"
    except Exception:  # a source or system build of OpenCV
        package = f"OpenCV {cv2.__version__}"
    card = {
        "implementation": f"{package} cv2.quality.QualityBRISQUE",
        "model": {
            "path": str(model_path),
            "sha256": _sha256(model_path),
            "range_path": str(range_path),
            "range_sha256": _sha256(range_path),
        },
    }
    low, high = (row.astype(np.float32) for row in feature_range)
    return cv2, svm, low, high, card


def _resize(h: int, w: int) -> tuple[int, int] | None:
    return (UPSCALE_FACTOR * h, UPSCALE_FACTOR * w) if min(h, w) < UPSCALE_BELOW else None


def brisque_scores(images: torch.Tensor) -> tuple[np.ndarray, dict[str, int], dict]:
    """Per-image BRISQUE scores (NaN where an image could not be scored), failure counts and the card facts.

    `images`: floats in [0, 1], shape (N, C, H, W) with C = 1 (grey) or 3 (RGB).
    """
    cv2, svm, low, high, card = _load(model_dir())
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"brisque scores grey (1-channel) or RGB (3-channel) images, got {c} channels")
    size = _resize(h, w)
    flat = np.zeros(n, dtype=bool)
    features = np.full((n, 36), np.nan, dtype=np.float32)
    errors: list[str] = []
    for start in range(0, n, CHUNK):
        x = images[start : start + CHUNK].float()
        if size is not None:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)  # a new tensor: the caller's is untouched
        flat[start : start + len(x)] = (x.amax(dim=(2, 3)) == x.amin(dim=(2, 3))).all(dim=1).numpy()
        # grey: HxW planes; RGB: HxWx3 in BGR order, converted to grey by OpenCV itself
        planes = x[:, 0].numpy() if c == 1 else x.flip(1).permute(0, 2, 3, 1).contiguous().numpy()
        for offset, plane in enumerate(planes):
            i = start + offset
            if flat[i]:
                continue
            try:
                features[i] = cv2.quality.QualityBRISQUE_computeFeatures(plane).reshape(-1)
            except cv2.error as exc:
                errors.append(str(exc).strip().splitlines()[-1])
    scored = np.isfinite(features).all(axis=1)
    scores = np.full(n, np.nan)
    if scored.any():
        # QualityBRISQUE::compute: scale each feature to [-1, 1] with the range file, predict, clamp to [0, 100]
        scaled = np.float32(-1.0) + np.float32(2.0) * (features[scored] - low) / (high - low)
        _, predicted = svm.predict(np.ascontiguousarray(scaled, dtype=np.float32))
        scores[scored] = np.clip(predicted.reshape(-1), 0.0, 100.0)
    failures = {
        "flat": int(flat.sum()),
        "opencv_error": len(errors),
        "non_finite_features": int((~scored).sum() - flat.sum() - len(errors)),
    }
    card = {
        **card,
        "resize": (
            f"bicubic x{UPSCALE_FACTOR} ({h}x{w} -> {size[0]}x{size[1]}, torch interpolate align_corners=False, "
            "clamped to [0, 1])"
            if size is not None
            else f"none ({h}x{w}, at least {UPSCALE_BELOW} px)"
        ),
        "input_scale": "0..255",
        "quantisation": "uint8, (x * 255).round() after the resize",
        "colour": "grey as is" if c == 1 else "RGB passed as BGR, converted to grey by OpenCV (COLOR_BGR2GRAY)",
    }
    if errors:
        card["first_opencv_error"] = errors[0]
    return scores, failures, card


def mean_brisque(inputs: EvalInputs) -> MetricResult:
    scores, failures, card = brisque_scores(inputs.samples)
    ok = scores[np.isfinite(scores)]
    n_failed = len(scores) - len(ok)
    if len(ok) == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in failures.items() if v)
        detail = f"; first OpenCV error: {card['first_opencv_error']}" if "first_opencv_error" in card else ""
        raise ValueError(
            f"BRISQUE could not score any of the {len(scores)} samples ({reasons}); flat (constant) or "
            f"degenerate images have no natural-scene statistics{detail}"
        )
    details = {
        "std": float(ok.std(ddof=1)) if len(ok) > 1 else 0.0,
        "n_scored": int(len(ok)),
        "n_failed": int(n_failed),
        "n_failed_flat": failures["flat"],
        "n_clamped": int(((ok == 0.0) | (ok == 100.0)).sum()),
    }
    return MetricResult(float(ok.mean()), details, card)


METRIC = register(
    Metric(
        compute=mean_brisque,
        higher_is_better=False,
        needs=frozenset(),
        version="1",
        reference="Mittal, Moorthy and Bovik, IEEE TIP 2012; OpenCV contrib cv2.quality.QualityBRISQUE (LIVE model)",
        definition=(
            "Mean BRISQUE score (0 best, 100 worst; OpenCV contrib, LIVE-R2 model) over the samples as 8-bit "
            "images, after a bicubic x2 upscale of images below 64 px; flat or degenerate samples are counted "
            "in n_failed and left out of the mean."
        ),
        display_order=310,
        roles=frozenset({"report"}),
    ),
    __name__,
)
