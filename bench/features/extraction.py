"""One feature pass per image set: the features every feature metric of an evaluation reads.

fid, kid, precision, recall, density, coverage, class_consistency and support_nn_feat all score an
evaluation's images in one feature space. A `FeatureBank` extracts each image set once per space, with
torch-fidelity's own extraction loop (`get_featuresdict_from_dataset`, uint8 input, batches of 500), so
the features are exactly those `torch_fidelity.calculate_metrics` would compute, and the metrics then run
torch-fidelity's functions on them. The evaluation reference is the same for every run of a split: its
features are kept on disk, keyed by the images' content and everything that decides the features
(extractor and weights digest, device type, thread count, library versions), so a sweep extracts them
once. Two processes that miss the cache together both compute and both write the same file atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from bench.features.evaluator import FIDELITY_EXTRACTOR, DomainEvaluator
from bench.features.fidelity_extractor import DomainFeatureExtractor  # noqa: F401 - registers `bench-domain`
from bench.sdk.files import atomic_write_bytes
from bench.sdk.paths import cache_dir

INCEPTION_EXTRACTOR = "inception-v3-compat"
FEATURE_SPACES = ("domain", INCEPTION_EXTRACTOR)
BATCH_SIZE = 500  # torch-fidelity's batch in calculate_metrics as the metrics called it: the same features
CACHE_FORMAT = 1


def as_uint8(images: torch.Tensor, channels: int = 0) -> torch.Tensor:
    """Images in [0, 1] as uint8 (what the store keeps), grey repeated to `channels` when more are asked for."""
    uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return uint8.repeat(1, channels // uint8.shape[1], 1, 1) if channels > uint8.shape[1] else uint8


class _Images(torch.utils.data.Dataset):
    """torch-fidelity wants a Dataset whose items are tensors (not tuples)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class FeatureBank:
    """The features of one evaluation's named image sets, each extracted once per feature space.

    `images`: the evaluation's sets by name (samples, reference, support); `extract` also takes a derived set
    by a new name with its images. `disk_cached`: the sets whose features are kept on disk across runs.
    """

    def __init__(
        self,
        images: dict[str, torch.Tensor | None],
        evaluator: DomainEvaluator | None = None,
        device: str = "cpu",
        disk_cached: tuple[str, ...] = ("reference",),
        cache_root: Path | None = None,
    ):
        self.images = dict(images)
        self.evaluator = evaluator
        self.device = torch.device(device)
        self.disk_cached = disk_cached
        self.cache_root = cache_root
        self._extracted: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self._extractors: dict[str, torch.nn.Module] = {}
        self.extractions = 0  # feature passes run (not read from a cache): what tests count

    def extract(
        self, name: str, space: str = "domain", images: torch.Tensor | None = None, weights: Path | None = None
    ) -> dict[str, torch.Tensor]:
        """{"features": (N, d)[, "logits": (N, classes)]} of the set `name` in `space` (CPU tensors).

        `images` names a derived set (e.g. shifted support copies) the first time it is asked for; `weights`: the
        InceptionV3 file for `inception-v3-compat` (the domain space uses the evaluator's)."""
        if (name, space) in self._extracted:
            return self._extracted[(name, space)]
        if images is None:
            images = self.images.get(name)
        if images is None:
            raise ValueError(f"no image set '{name}' in this evaluation (sets: {', '.join(self.images)})")
        extractor, layers, channels, weights_sha256 = self._extractor(space, weights)
        uint8 = as_uint8(images, channels)
        path = None
        if name in self.disk_cached:
            path = self._cache_path(uint8, space, layers, weights_sha256)
            if path.is_file():
                with contextlib.suppress(Exception):  # an unreadable cache file is recomputed and replaced
                    cached = torch.load(path, map_location="cpu", weights_only=True)
                    self._extracted[(name, space)] = cached
                    return cached
        features = self._run(extractor, uint8, layers)
        self.extractions += 1
        if path is not None:
            buffer = io.BytesIO()
            torch.save(features, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        self._extracted[(name, space)] = features
        return features

    def _extractor(self, space: str, weights: Path | None) -> tuple[torch.nn.Module, list[str], int, str]:
        if space == "domain":
            if self.evaluator is None:
                raise ValueError("the domain feature space needs the dataset's domain evaluator, which was not given")
            layers, channels, sha = ["features", "logits"], 0, self.evaluator.card["weights_sha256"]
            name, weights = FIDELITY_EXTRACTOR, self.evaluator.path
        elif space == INCEPTION_EXTRACTOR:
            if weights is None:
                raise ValueError(f"{INCEPTION_EXTRACTOR} needs its weights file")
            name, layers, channels = INCEPTION_EXTRACTOR, ["2048"], 3
            sha = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
        else:
            raise ValueError(f"unknown feature space '{space}' (valid: {', '.join(FEATURE_SPACES)})")
        if space not in self._extractors:
            self._extractors[space] = create_feature_extractor(
                name, layers, cuda=False, feature_extractor_weights_path=str(weights), verbose=False
            ).to(self.device)
        return self._extractors[space], layers, channels, sha

    def _run(self, extractor: torch.nn.Module, uint8: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        cuda = self.device.type == "cuda"
        with torch.cuda.device(self.device) if cuda else contextlib.nullcontext():
            features = get_featuresdict_from_dataset(
                _Images(uint8), extractor, BATCH_SIZE, cuda, save_cpu_ram=True, verbose=False
            )
        named = {"features": features[layers[0]]}
        if "logits" in layers:
            named["logits"] = features["logits"]
        return {key: value.cpu() for key, value in named.items()}

    def _cache_path(self, uint8: torch.Tensor, space: str, layers: list[str], weights_sha256: str) -> Path:
        content = hashlib.sha256(uint8.contiguous().numpy().tobytes()).hexdigest()
        key = {
            "format": CACHE_FORMAT,
            "images": [content, list(uint8.shape)],
            "space": space,
            "layers": layers,
            "weights_sha256": weights_sha256,
            "batch_size": BATCH_SIZE,
            # Float reductions depend on these: features are reused only where they would be recomputed bit for bit.
            "device": self.device.type,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torch_fidelity": torch_fidelity.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return (self.cache_root or cache_dir() / "features") / f"{digest[:32]}.pt"
