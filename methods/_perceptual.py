"""A perceptual matching distance for the IMLE family, from a network trained on the base classes only.

The IMLE papers match samples to training images in LPIPS (with a small L2 term): unit-normalised
channel activations of an ImageNet classifier, squared differences averaged over positions and summed
over layers. ImageNet weights cannot be assumed here, and the domain evaluator may not be used (it has
seen the novel class and is the ruler every method is scored with). So a method trains its own
feature network: a small convolutional classifier of the base classes (`MatchingNet`), trained with
cross-entropy during the method's base-class phase (cached and shared across support draws by the
harness like any pretraining). The distance is LPIPS's form with uniform layer weights (the LPIPS
paper's uncalibrated variant: its learned weights come from human judgements we do not have):

    d(x, y) = sum_l mean_hw || f_l(x)_hw / |f_l(x)_hw| - f_l(y)_hw / |f_l(y)_hw| ||^2 + w mean_p (x_p - y_p)^2

with `w` = `pixel_weight` (0.1, as the papers add an L2 term). `embed` returns one vector per image
whose squared Euclidean distances are exactly d, so IMLE's nearest-neighbour search stays one matrix
product (`methods._imle.pairwise_squared_distances`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.sdk.progress import Reporter
from bench.sdk.task import FewShotTask
from bench.sdk.training import minibatches, optimise, seeded_init


class MatchingNet(nn.Module):
    """Three convolutions (the first at full resolution, then two at stride 2) and a linear read-out of the classes.

    The distance reads the two strided layers' activations: the full-resolution layer is mostly edges
    at pixel scale, which the L2 term already covers, and skipping it keeps the embedding small (28x28:
    14x14x32 + 7x7x64 = 9,408 numbers)."""

    def __init__(self, image_shape: tuple[int, int, int], classes: int, width: int = 32):
        super().__init__()
        channels = image_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(channels, width // 2, 3, padding=1), nn.ReLU())
        self.layers = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(width // 2, width, 4, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.head = nn.Linear(2 * width, classes)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images in [0, 1] -> the activations the distance compares, one tensor per layer."""
        hidden = self.stem(images * 2 - 1)
        out = []
        for layer in self.layers:
            hidden = layer(hidden)
            out.append(hidden)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)[-1].mean((2, 3)))


class PerceptualMatching(nn.Module):
    """The matching embedding: `embed(x)` (differentiable), whose squared Euclidean distances are d(x, y) above."""

    def __init__(self, net: MatchingNet, pixel_weight: float):
        super().__init__()
        self.net = net.requires_grad_(False).eval()
        self.pixel_weight = pixel_weight

    @classmethod
    def trained_on_base(
        cls,
        task: FewShotTask,
        steps: int,
        *,
        pixel_weight: float,
        seed: int,
        generator: torch.Generator,
        device: torch.device | str,
        reporter: Reporter | None = None,
        batch_size: int = 64,
    ) -> tuple[PerceptualMatching, dict]:
        """Train the feature network with cross-entropy on the base images (never the support set).

        Returns the matching and its training log (loss and accuracy, their curves)."""
        if not len(task.base_images):
            raise ValueError("perceptual matching trains its network on the base classes, and this task has none")
        with seeded_init(seed):
            net = MatchingNet(task.image_shape, int(task.base_labels.max()) + 1).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        batches = minibatches(torch.arange(len(task.base_images)), batch_size, generator)

        def loss_fn(step: int) -> dict[str, torch.Tensor]:
            index = next(batches)
            logits = net(task.base_images[index].to(device))
            labels = task.base_labels[index].to(device)
            return {
                "loss": nn.functional.cross_entropy(logits, labels),
                "accuracy": (logits.argmax(1) == labels).float().mean(),
            }

        result = optimise(loss_fn, optimizer, steps, phase="matching network", reporter=reporter, curve_points=50)
        log = {
            "network": "MatchingNet, a classifier of the base classes",
            "steps": steps,
            "batch_size": batch_size,
            **result,
        }
        return cls(net, pixel_weight), log

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) in [0, 1] -> (n, d): unit-normalised channel vectors scaled by 1/sqrt(positions), and pixels."""
        parts = []
        for activation in self.net.features(images):
            positions = activation.shape[2] * activation.shape[3]
            unit = activation / (activation.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            parts.append(unit.flatten(1) / math.sqrt(positions))
        pixels = images.flatten(1)
        parts.append(pixels * math.sqrt(self.pixel_weight / pixels.shape[1]))
        return torch.cat(parts, 1)
