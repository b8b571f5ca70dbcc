"""LPIPS backtracking (Liu et al., FastGAN, ICLR 2021), shared by `lpips_backtrack` and `lpips_backtrack_support`.

For each target image x, optimise a latent code z so that the method's generator G(z)
reconstructs x, and report the perceptual distance of the best reconstruction:

    d(x) = min over R restarts of  D(G(z_T), x),   z_0 ~ the method's latent prior,
    z_{t+1} = Adam step on D(G(z_t), x),  T iterations, learning rate `lr`.

All targets and restarts are optimised together as one batch. A generator that can reach
held-out images of the class (small d) models the class; one that reaches only its support
images memorises them: the gap between the held-out and support scores is the diagnostic.

D is LPIPS (Zhang et al., CVPR 2018, AlexNet, the `lpips` package's linear heads) when the
AlexNet backbone weights are in torch's hub cache; otherwise the domain perceptual distance:
the unweighted LPIPS form on the domain evaluator's two conv blocks,
D(x, y) = sum_l mean_hw || f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)| ||^2 (channel-normalised).
The card says which was used; `perceptual_distance` in the settings forces one. Settings:
`BacktrackSettings` (N targets, T steps, R restarts, learning rate per profile).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from metrics import EvalInputs, MetricResult, MetricSettings, MissingOptionalPart, fixed_setting, profile_setting
from metrics._weights import download_weights, hub_checkpoint

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
PERCEPTUAL_DISTANCES = ("auto", "lpips", "domain")
BUDGET_RULE = (
    "per profile: quick lr 0.2, 400 steps x 2 restarts, the cheapest point of the measured curve within 5% of the "
    "lowest distance (docs/metrics.md#budgets), on 50 targets; paper 1,000 x 5 on 100; smoke a test of the code path"
)


@dataclass(frozen=True)
class BacktrackSettings(MetricSettings):
    """Read by `lpips_backtrack` and `lpips_backtrack_support` (one optimisation budget for both)."""

    # Budget: the measured curves (docs/metrics.md#budgets, results/curves/) put lr 0.2, 400 steps x 2 restarts
    # within 3% of the lowest distance measured (400 x 5) on imle, vae and cgan; lr 0.05 at 200 x 3 was up to 27%
    # above it. `quick` scores 50 targets (standard error about std/7) to fit the main job in 30 minutes.
    backtrack_images: int = profile_setting(100, "targets N: the first N images of the target set", smoke=16, quick=50)
    backtrack_steps: int = profile_setting(400, "Adam iterations T per restart", smoke=30, paper=1000)
    backtrack_restarts: int = profile_setting(2, "restarts R from the latent prior; the best is kept", smoke=1, paper=5)
    backtrack_lr: float = profile_setting(0.2, "Adam learning rate", smoke=0.05)
    perceptual_distance: str = fixed_setting(
        "auto", "D: `lpips`, `domain`, or `auto` (LPIPS when AlexNet's weights are in torch's hub cache, else domain)"
    )

    def __post_init__(self):
        if self.perceptual_distance not in PERCEPTUAL_DISTANCES:
            raise ValueError(
                f"unknown perceptual_distance '{self.perceptual_distance}' (valid: {', '.join(PERCEPTUAL_DISTANCES)})"
            )


LPIPS_MIN_SIDE = 64  # AlexNet's pooling fails below about 32 px; LPIPS is computed at 64 px or more


def alexnet_weights_path() -> Path:
    return hub_checkpoint(ALEXNET_WEIGHTS)


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return features / (features.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


@dataclass(frozen=True)
class PerceptualDistance:
    """D(x, y) split in two, so that the targets' features, which never change, are computed once per run:
    `distance(x, target_features(y))` equals D(x, y)."""

    target_features: Callable[[torch.Tensor], list[torch.Tensor]]
    distance: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
    device: torch.device
    card: dict


def domain_distance(inputs: EvalInputs) -> PerceptualDistance:
    evaluator = inputs.evaluator
    model = evaluator.model

    def target_features(y: torch.Tensor) -> list[torch.Tensor]:
        return [_normalise(f) for f in model.conv_features(y)]

    def distance(x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for fx, fy in zip(model.conv_features(x), targets):
            total = total + (_normalise(fx) - fy).pow(2).sum(1).mean((1, 2))
        return total

    card = {
        "distance": "domain perceptual distance (unweighted LPIPS form on the domain evaluator's conv blocks)",
        "distance_weights_sha256": evaluator.card["weights_sha256"],
    }
    return PerceptualDistance(target_features, distance, next(model.parameters()).device, card)


def lpips_distance(device: torch.device) -> PerceptualDistance:
    weights = alexnet_weights_path()
    if not weights.is_file():
        import torchvision

        download_weights(
            weights,
            "LPIPS's AlexNet backbone weights",
            lambda: torchvision.models.alexnet(weights=torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
        )
    import lpips

    net = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False).to(device)

    def prepare(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        side = min(images.shape[-2:])
        if side < LPIPS_MIN_SIDE:
            scale = LPIPS_MIN_SIDE / side
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        return net.scaling_layer(images * 2 - 1)

    def target_features(y: torch.Tensor) -> list[torch.Tensor]:
        return [lpips.normalize_tensor(f) for f in net.net(prepare(y))]

    def distance(x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        # lpips.LPIPS.forward (version 0.1, linear heads, spatial average) with the target side precomputed.
        total = 0
        for layer, (fx, fy) in enumerate(zip(net.net(prepare(x)), targets)):
            diff = (lpips.normalize_tensor(fx) - fy) ** 2
            total = total + net.lins[layer](diff).mean((2, 3), keepdim=True)
        return total.flatten()

    card = {
        "distance": f"LPIPS (lpips {importlib.metadata.version('lpips')}, AlexNet, linear heads v0.1); "
        f"grey repeated to RGB, bilinear upsampling to >= {LPIPS_MIN_SIDE} px",
        "distance_weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    return PerceptualDistance(target_features, distance, torch.device(device), card)


def choose_distance(inputs: EvalInputs, choice: str) -> PerceptualDistance:
    if choice == "lpips" or (choice == "auto" and alexnet_weights_path().is_file()):
        return lpips_distance(_model_device(inputs.model))
    if inputs.evaluator is None:
        raise MissingOptionalPart(
            f"the dataset has no domain evaluator and LPIPS's AlexNet weights are not at {alexnet_weights_path()}: "
            "no perceptual distance to backtrack with"
        )
    return domain_distance(inputs)


def _model_device(model) -> torch.device:
    return torch.device(getattr(model, "device", None) or "cpu")


def backtrack_trajectory(
    inputs: EvalInputs, targets: torch.Tensor, steps: int, restarts: int, record_at: tuple[int, ...] = ()
) -> tuple[dict[int, torch.Tensor], PerceptualDistance]:
    """Distances D(G(z_t), x) of every restart and target, shape (restarts, targets), after t steps for each t in
    `record_at` and after `steps`; and the distance used. The restarts are independent (Adam is elementwise and
    the loss a sum over them), so the first r restarts of a run are a run with r restarts from other draws.

    The latents live on the model's device and the distance on the perceptual network's (the evaluation device);
    they are one device unless the evaluation was asked to run elsewhere. Nothing is copied to the CPU per step."""
    settings = inputs.settings_as(BacktrackSettings)
    perceptual = choose_distance(inputs, settings.perceptual_distance)
    model, n = inputs.model, len(targets)
    generator = torch.Generator().manual_seed(inputs.seed)
    z = model.sample_latent(n * restarts, generator).clone().requires_grad_(True)
    with torch.no_grad():
        target_features = perceptual.target_features(targets.repeat(restarts, 1, 1, 1).to(perceptual.device))
    optimizer = torch.optim.Adam([z], lr=settings.backtrack_lr)
    recorded: dict[int, torch.Tensor] = {}
    with torch.enable_grad():
        for step in range(steps):
            distances = perceptual.distance(model.decode(z).to(perceptual.device), target_features)
            if step in record_at:  # the distance at z_t, before step t+1: what a run of t steps ends with
                recorded[step] = distances.detach().view(restarts, n).cpu()
            optimizer.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(distances.sum(), z)
            z.grad = grad
            optimizer.step()
    with torch.no_grad():
        recorded[steps] = perceptual.distance(model.decode(z).to(perceptual.device), target_features)
        recorded[steps] = recorded[steps].view(restarts, n).cpu()
    return recorded, perceptual


def backtrack(inputs: EvalInputs, targets: torch.Tensor, label: str) -> tuple[torch.Tensor, dict]:
    """Per-target best perceptual distance after optimising latents of `inputs.model`, and the card."""
    settings = inputs.settings_as(BacktrackSettings)
    n = min(len(targets), settings.backtrack_images)
    steps, restarts = settings.backtrack_steps, settings.backtrack_restarts
    recorded, perceptual = backtrack_trajectory(inputs, targets[:n], steps, restarts)
    best = recorded[steps].min(0).values
    card = {
        **perceptual.card,
        "protocol": "FastGAN LPIPS backtracking: Adam on z from the latent prior, best of restarts",
        "targets": f"first {n} {label} images",
        "n_targets": n,
        "steps": steps,
        "restarts": restarts,
        "lr": settings.backtrack_lr,
        "budget_rule": BUDGET_RULE,
    }
    return best, card


def backtrack_score(inputs: EvalInputs, targets: torch.Tensor, label: str) -> MetricResult:
    """Mean best distance over the targets, with its std (0 for a single target)."""
    distances, card = backtrack(inputs, targets, label)
    std = float(distances.std()) if len(distances) > 1 else 0.0
    return MetricResult(float(distances.mean()), {"std": std, "sem": std / len(distances) ** 0.5}, card)
