"""BRISQUE (metrics/brisque.py) against OpenCV's own QualityBRISQUE called directly.

References are computed here with `cv2.quality.QualityBRISQUE_compute` on 8-bit images (BGR for
colour, as OpenCV reads files) and, for small images, `cv2.resize(INTER_CUBIC)`: an independent
path to the same numbers, not the metric's own output.
"""

import hashlib

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from conftest import requires_data
from skimage.filters import gaussian

from bench.harness.evaluation import evaluate
from metrics import EvalInputs
from metrics.brisque import MODEL_FILE, RANGE_FILE, brisque_scores, model_dir

# The files the metric itself reads (BENCH_BRISQUE_MODEL_DIR honoured), so both sides score with one model.
MODEL, RANGE = str(model_dir() / MODEL_FILE), str(model_dir() / RANGE_FILE)


def reference_score(image_u8: np.ndarray) -> float:
    """OpenCV's BRISQUE of an 8-bit grey (HxW) or RGB (HxWx3) image."""
    bgr = image_u8 if image_u8.ndim == 2 else np.ascontiguousarray(image_u8[..., ::-1])
    return cv2.quality.QualityBRISQUE_compute(bgr, MODEL, RANGE)[0]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, 3) -> float (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float() / 255
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


def brisque(samples: torch.Tensor) -> dict:
    return evaluate(samples, reference=None, metric_names=["brisque"])[0]["brisque"]


def small_grey(name: str) -> np.ndarray:
    """A scikit-image photograph in grey, area-downscaled to 28x28."""
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(image, (28, 28), interpolation=cv2.INTER_AREA)


def reference_upscaled(small_u8: np.ndarray) -> float:
    """The stated resize done with OpenCV: bicubic x2 on [0, 1] floats, clamped, rounded to 8 bits."""
    up = cv2.resize(small_u8.astype(np.float32) / 255, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return reference_score(np.round(np.clip(up, 0, 1) * 255).astype(np.uint8))


@pytest.mark.parametrize("name", ["camera", "moon", "brick", "page", "astronaut", "coffee", "chelsea", "rocket"])
def test_full_resolution_photographs_match_opencv(name):
    image = getattr(skimage.data, name)()
    assert min(image.shape[:2]) >= 64  # scored at their own size: no resize
    outcome = brisque(to_tensor(image[None]))
    assert outcome["status"] == "ok" and outcome["n_failed"] == 0
    assert outcome["value"] == pytest.approx(reference_score(image), abs=1e-4)


def test_the_agreement_check_is_not_vacuous():
    # OpenCV clamps to [0, 100]; some of the photographs above must score strictly inside it.
    inside = [
        0 < reference_score(getattr(skimage.data, n)()) < 100 for n in ["moon", "brick", "page", "coffee", "rocket"]
    ]
    assert all(inside)


def test_colour_is_read_as_rgb_and_converted_by_opencv():
    image = skimage.data.coffee()
    swapped = cv2.quality.QualityBRISQUE_compute(image, MODEL, RANGE)[0]  # RGB wrongly given as BGR
    assert swapped != pytest.approx(reference_score(image), abs=1e-3)  # so the test below can tell them apart
    assert brisque(to_tensor(image[None]))["value"] == pytest.approx(reference_score(image), abs=1e-4)


def test_small_images_are_upscaled_x2_bicubic_like_opencv():
    names = ["camera", "astronaut", "coffee", "chelsea", "moon", "grass", "gravel", "coins", "page"]
    smalls = np.stack([small_grey(n) for n in names])
    scores, failures, card = brisque_scores(to_tensor(smalls))
    expected = [reference_upscaled(s) for s in smalls]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert sum(failures.values()) == 0
    assert "28x28 -> 56x56" in card["resize"] and card["input_scale"] == "0..255"


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_more_blur_scores_worse(name):
    image = getattr(skimage.data, name)().astype(np.float64) / 255
    channel_axis = None if image.ndim == 2 else -1
    levels = [image] + [gaussian(image, sigma=s, channel_axis=channel_axis) for s in (0.75, 1.5, 3.0)]
    scores, _, _ = brisque_scores(to_tensor(np.round(np.stack(levels) * 255).astype(np.uint8)))
    assert np.all(np.diff(scores) > 5), scores


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_more_noise_scores_worse(name):
    image = getattr(skimage.data, name)().astype(np.float64) / 255
    rng = np.random.default_rng(0)
    levels = [image] + [np.clip(image + s * rng.standard_normal(image.shape), 0, 1) for s in (0.03, 0.08, 0.2)]
    scores, _, _ = brisque_scores(to_tensor(np.round(np.stack(levels) * 255).astype(np.uint8)))
    assert np.all(np.diff(scores) > 5), scores


def test_flat_and_degenerate_samples_are_counted_and_left_out_of_the_mean():
    normal = np.stack([small_grey(n) for n in ["camera", "astronaut", "coffee", "chelsea"]])
    black = np.zeros((1, 28, 28), np.uint8)
    grey = np.full((1, 28, 28), 153, np.uint8)
    step = np.zeros((1, 28, 28), np.uint8)
    step[:, :, 14:] = 255  # not flat, but its BRISQUE features are not finite
    samples = to_tensor(np.concatenate([normal[:2], black, normal[2:], step, grey]))
    outcome = brisque(samples)
    assert outcome["status"] == "ok"
    assert outcome["n_failed"] == 3 and outcome["n_failed_flat"] == 2 and outcome["n_scored"] == 4
    assert outcome["value"] == pytest.approx(np.mean([reference_upscaled(s) for s in normal]), abs=1e-4)
    assert np.isfinite(outcome["std"])


def test_a_flat_colour_image_is_a_failure():
    red = torch.zeros(1, 3, 32, 32)
    red[:, 0] = 1.0
    photo = to_tensor(cv2.resize(skimage.data.coffee(), (32, 32), interpolation=cv2.INTER_AREA)[None])
    outcome = brisque(torch.cat([photo, red]))
    assert outcome["status"] == "ok" and outcome["n_failed"] == 1 and outcome["n_failed_flat"] == 1


def test_all_flat_samples_raise_and_the_harness_records_the_error():
    from metrics.brisque import METRIC

    with pytest.raises(ValueError, match="could not score any of the 3 samples"):
        METRIC.compute(EvalInputs(samples=torch.zeros(3, 1, 28, 28)))
    outcome = brisque(torch.zeros(3, 1, 28, 28))
    assert outcome["status"] == "error" and "flat" in outcome["error"] and "value" not in outcome


def test_missing_model_files_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_BRISQUE_MODEL_DIR", str(tmp_path))
    outcome = brisque(to_tensor(small_grey("camera")[None]))
    assert outcome["status"] == "unavailable"
    assert "apt-get install -y opencv-data" in outcome["reason"] and MODEL_FILE in outcome["reason"]


def test_card_names_the_implementation_and_the_model_hash():
    card = brisque(to_tensor(small_grey("camera")[None]))["card"]
    assert (
        card["implementation"].startswith("opencv-contrib-python-headless")
        and "QualityBRISQUE" in card["implementation"]
    )
    assert card["model"]["sha256"] == hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
    assert card["model"]["path"] == MODEL and card["higher_is_better"] is False


def test_the_samples_are_not_modified():
    samples = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    before = samples.clone()
    brisque(samples)
    assert torch.equal(samples, before)


@requires_data("fashion-mnist")
def test_real_fashion_mnist_scores_better_than_noise():
    from bench.data.splits import load_dataset, to_float

    _, data = load_dataset("fashion-mnist")
    real = to_float(data.test_images[:300])
    generator = torch.Generator().manual_seed(0)
    uniform = torch.rand(real.shape, generator=generator)
    blurred = torch.from_numpy(gaussian(real.numpy(), sigma=(0, 0, 1.5, 1.5))).float()
    scores = {name: brisque(x) for name, x in [("real", real), ("uniform", uniform), ("blurred", blurred)]}
    assert all(o["status"] == "ok" and o["n_failed"] == 0 for o in scores.values())
    assert scores["real"]["value"] < scores["blurred"]["value"] < scores["uniform"]["value"]
