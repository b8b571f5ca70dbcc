"""The domain evaluator: a small CNN classifier trained by the project on a dataset's train split.

ImageNet feature extractors (InceptionV3 for FID, AlexNet/VGG for LPIPS) cannot be downloaded
on offline machines and fit 28x28 grey-scale data poorly anyway. The offline default feature
space is therefore a classifier trained on the dataset itself, on ALL classes of its train
split (the generators see only the k support images of the novel class; the evaluator may see
all of them). Its penultimate layer (`features`, 128-d) feeds FID, KID and precision/recall;
its logits give class consistency; its conv blocks give the perceptual distance used when
LPIPS weights are absent.

One fixed ruler: training is deterministic on one machine but not bit for bit across machines
(the CPU's instruction set changes the float arithmetic), so every dataset with classes has ONE
weights file per recipe version shipped in the package (`bench/features/weights/`), pinned below by the
sha256 of the file and its measured test accuracy. Loading verifies the digest before reading the
file (with `torch.load(weights_only=True)`: a weights file cannot run code); a missing or altered
file is an error naming the file and how to restore it, never a silent retrain. `bench evaluator
train` reproduces a recipe and prints its digest; `bench evaluator list` shows what is pinned and
where it was found. `$BENCH_EVALUATOR_DIR` is searched before the package folder.

Datasets no shipped file can cover (image folders with class sub-folders) and non-default recipes
train on first use and are cached under `<cache>/evaluators/<dataset>/<architecture>-<key>.pt`,
the key hashing the data's content, the architecture, the recipe version and the config; their
card says `origin: trained on this machine`. The card's `weights_sha256` is the sha256 of the
weights file and goes into every metric card. An evaluator whose test accuracy is below the
dataset's configured minimum is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.data.datasets import DATASETS
from bench.data.splits import load_dataset
from bench.sdk.augment import AugmentConfig, augment
from bench.sdk.files import atomic_write_bytes
from bench.sdk.paths import EVALUATOR_DIR_ENV, cache_dir
from bench.sdk.progress import NullReporter, Reporter
from bench.sdk.training import make_generator, seeded_init

ARCHITECTURE = "convnet2-v2"  # the default structure (2 blocks of 1 conv); others are named by `architecture_name`
# Bumped when training changes in a way the config does not capture (2: dropout drawn from the seed).
RECIPE_VERSION = 2
FEATURE_DIM = 128


class NoDomainEvaluator(RuntimeError):
    """The dataset has no classes (a folder without class sub-folders): there is nothing to train an evaluator on."""


class EvaluatorWeightsError(RuntimeError):
    """A pinned evaluator's weights file is missing, altered or unreadable."""


class EvaluatorTooWeak(RuntimeError):
    """The trained evaluator's test accuracy is below the dataset's minimum; its features are not trusted."""


@dataclass(frozen=True)
class EvaluatorConfig:
    width: int = 32  # channels of the first block; each further block doubles them
    blocks: int = 2  # conv blocks, each followed by 2x2 max-pooling
    convs_per_block: int = 1
    augment: bool = False  # random shifts up to 4 px (and flips where the dataset allows): for natural images
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def architecture_name(config: EvaluatorConfig) -> str:
    if (config.blocks, config.convs_per_block) == (2, 1):
        return ARCHITECTURE
    return f"convnet{config.blocks}x{config.convs_per_block}-v1"


# Per-dataset evaluator recipes; every other dataset uses EvaluatorConfig(). CIFAR-10 needs depth and
# augmentation to pass its 80% bar. Omniglot (964 classes, 16 drawings each) with the default recipe
# reached 58.8% on held-out drawers; with shifts and 30 epochs 82.5% (2 blocks, 255 s) and 85.6%
# (3 blocks, 302 s) on 2 CPU cores.
EVALUATOR_CONFIGS = {
    "cifar10": EvaluatorConfig(width=32, blocks=3, convs_per_block=2, augment=True, epochs=10),
    "omniglot": EvaluatorConfig(width=32, blocks=3, augment=True, epochs=30),
}


def config_for(dataset_name: str) -> EvaluatorConfig:
    return EVALUATOR_CONFIGS.get(dataset_name, EvaluatorConfig())


@dataclass(frozen=True)
class PinnedWeights:
    """The shipped weights of one dataset's recipe: the file, its sha256 and the accuracy measured when it was trained."""

    file: str
    sha256: str
    test_accuracy: float


SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# One file per dataset and recipe version (`bench evaluator train --dataset X --out bench/features/weights/FILE`
# produced each; the note of the change that pinned it gives the machine and the training time).
# Changing a dataset's recipe (its config, the architecture or RECIPE_VERSION) requires a new file and
# a new entry here: the loader refuses a file whose card does not match the current recipe.
PINNED_WEIGHTS: dict[str, PinnedWeights] = {
    "fashion-mnist": PinnedWeights(
        "fashion-mnist-convnet2-v2-r2.pt", "e170c9758023e885994d35f3e26cf2014da1151d5525353d4ae345c06eff26eb", 0.9182
    ),
    "mnist": PinnedWeights(
        "mnist-convnet2-v2-r2.pt", "d4c09a59f4a726e8d0efcddf8a34b9a6fdee37fad029c7ac0d7d37ff2ac5812e", 0.9938
    ),
    "omniglot": PinnedWeights(
        "omniglot-convnet3x1-v1-r2.pt", "a93ef7cf1df76389e105b18294bf9b09d1251211e70b1110569fcccae61243ac", 0.858143
    ),
    "cifar10": PinnedWeights(
        "cifar10-convnet3x2-v1-r2.pt", "5568ff7a10f9d918eb255fbebfc302d856fafecb9f27f390560e1abdfc5ee426", 0.8277
    ),
}


def weights_search_dirs() -> list[Path]:
    """Where pinned weights files are looked for, in order: `$BENCH_EVALUATOR_DIR`, then the package's own folder."""
    dirs = [Path(os.environ[EVALUATOR_DIR_ENV]).expanduser()] if os.environ.get(EVALUATOR_DIR_ENV) else []
    return dirs + [SHIPPED_WEIGHTS_DIR]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_pinned_weights(dataset_name: str) -> Path:
    """The verified path of `dataset_name`'s pinned weights file; EvaluatorWeightsError if missing or altered."""
    pinned = PINNED_WEIGHTS[dataset_name]
    searched = [directory / pinned.file for directory in weights_search_dirs()]
    restore = (
        f"restore it from the repository (`git checkout -- bench/features/weights/{pinned.file}`) or reinstall the package. "
        f"`bench evaluator train --dataset {dataset_name} --out FILE` retrains the recipe, but training is not bit for "
        "bit reproducible across machines: a retrained file has another digest, and its scores are not comparable "
        "with the leaderboard's"
    )
    for path in searched:
        if path.is_file():
            digest = file_sha256(path)
            if digest != pinned.sha256:
                raise EvaluatorWeightsError(
                    f"{path} has sha256 {digest}, but the {dataset_name} evaluator is pinned to {pinned.sha256}: the file "
                    f"is damaged or was replaced; {restore}"
                )
            return path
    raise EvaluatorWeightsError(
        f"the {dataset_name} domain evaluator's pinned weights file {pinned.file} was not found (looked for "
        f"{', '.join(str(p) for p in searched)}); {restore}"
    )


class DomainCNN(nn.Module):
    """Conv blocks (3x3 convs with batch norm and ReLU; 2x2 max-pool after each), a 128-d feature layer, logits.

    The default (2 blocks of one conv, width 32) trains in a few minutes on 2 CPU cores (about
    40 s per Fashion-MNIST epoch). Module names (`block1`, `block2`, ...) are part of the weights'
    digest: keep them.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,
        blocks: int = 2,
        convs_per_block: int = 1,
    ):
        super().__init__()
        channels, height, width_px = image_shape

        def block(c_in: int, c_out: int) -> nn.Sequential:
            layers = []
            for i in range(convs_per_block):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            return nn.Sequential(*layers)

        self.n_blocks = blocks
        for i in range(blocks):
            setattr(self, f"block{i + 1}", block(channels if i == 0 else width * 2 ** (i - 1), width * 2**i))
        scale = 2**blocks
        flat = width * 2 ** (blocks - 1) * (height // scale) * (width_px // scale)
        # Features are taken before the ReLU: post-ReLU units that never fire would make the
        # feature covariance singular and FID numerically ill-posed.
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(flat, FEATURE_DIM))
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, num_classes))

    @classmethod
    def from_config(cls, image_shape, num_classes: int, config: EvaluatorConfig | dict) -> DomainCNN:
        config = config if isinstance(config, dict) else dataclasses.asdict(config)
        return cls(
            tuple(image_shape), num_classes, config["width"], config.get("blocks", 2), config.get("convs_per_block", 1)
        )

    def conv_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every conv block (before pooling): the layers of the perceptual distance."""
        outputs = []
        h = x
        for i in range(self.n_blocks):
            h = getattr(self, f"block{i + 1}")(h if i == 0 else F.max_pool2d(h, 2))
            outputs.append(h)
        return outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (features, logits) for images in [0, 1]."""
        last = self.conv_features(x)[-1]
        features = self.features(F.max_pool2d(last, 2))
        return features, self.classifier(features)


FIDELITY_EXTRACTOR = "bench-domain"  # the torch-fidelity name of the adapter in bench/features/fidelity_extractor.py


@dataclass
class DomainEvaluator:
    """A trained evaluator and its card."""

    fidelity_extractor: ClassVar[str] = FIDELITY_EXTRACTOR

    model: DomainCNN
    dataset: str
    path: Path
    card: dict

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        outputs = [self.model(chunk.to(device)) for chunk in images.split(batch_size)]
        return torch.cat([f for f, _ in outputs]).cpu(), torch.cat([logits for _, logits in outputs]).cpu()


def weights_digest(model: nn.Module) -> str:
    """sha256 over the parameters and buffers (names, shapes, dtypes, bytes): identifies the weights, not the file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _cache_key(dataset_name: str, content: dict, config: EvaluatorConfig) -> str:
    payload = json.dumps(
        {
            "dataset": dataset_name,
            "content": content,
            "architecture": architecture_name(config),
            "recipe": RECIPE_VERSION,
            "config": dataclasses.asdict(config),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Shifts only (and flips where allowed): the evaluator should see the class, not the framing.
TRAINING_AUGMENTATION = AugmentConfig(max_shift=4.0, max_rotation=0.0, max_scale=0.0, brightness=0.0, contrast=0.0)


def _train(
    data, image_shape, num_classes: int, config: EvaluatorConfig, reporter: Reporter, allow_hflip: bool = False
) -> tuple[DomainCNN, dict]:
    generator = make_generator(config.seed)
    # The whole of training runs under the seed: dropout masks come from the global generator.
    with seeded_init(config.seed):
        return _train_seeded(data, image_shape, num_classes, config, reporter, generator, allow_hflip)


def _train_seeded(data, image_shape, num_classes, config, reporter, generator, allow_hflip) -> tuple[DomainCNN, dict]:
    model = DomainCNN.from_config(image_shape, num_classes, config)
    images = torch.from_numpy(data.train_images.copy())  # a writable copy: the loaded arrays may be read-only
    labels = torch.from_numpy(data.train_labels.astype("int64"))
    steps_per_epoch = len(images) // config.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch)
    handle = reporter.task("train domain evaluator", config.epochs * steps_per_epoch)
    model.train()
    start = time.perf_counter()
    try:
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            for step in range(steps_per_epoch):
                index = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = images[index].float().div_(255)
                if config.augment:
                    x = augment(x, len(x), generator, TRAINING_AUGMENTATION, allow_hflip, keep_originals=False)
                loss = F.cross_entropy(model(x)[1], labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                handle.advance()
    finally:
        handle.close()
    model.eval()
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        test = torch.from_numpy(data.test_images.astype("float32"))
        predictions = torch.cat([model(chunk.div(255))[1].argmax(1) for chunk in test.split(1000)])
    test_labels = torch.from_numpy(data.test_labels.astype("int64"))
    correct = predictions == test_labels
    per_class = [float(correct[test_labels == c].float().mean()) for c in range(num_classes)]
    return model, {
        "test_accuracy": float(correct.float().mean()),
        "per_class_test_accuracy": per_class,
        "train_seconds": train_seconds,
    }


def require_classes(dataset_name: str) -> None:
    """NoDomainEvaluator unless the dataset has classes to train an evaluator on."""
    if DATASETS.get(dataset_name).evaluator_num_classes < 2:
        raise NoDomainEvaluator(
            f"{dataset_name} has no classes, so no domain evaluator can be trained: the metrics that use its features or "
            "its classifier (density, coverage, class_consistency, support_nn_feat, and lpips_backtrack without the "
            "AlexNet weights) do not apply; fid, kid, precision and recall use InceptionV3 features on this dataset"
        )


def train_evaluator(
    dataset_name: str, config: EvaluatorConfig | None = None, reporter: Reporter | None = None
) -> tuple[DomainCNN, dict]:
    """Train `dataset_name`'s evaluator with its recipe (`config_for`, unless given); return the model and its card."""
    require_classes(dataset_name)
    dataset, data = load_dataset(dataset_name)
    config = config or config_for(dataset.name)
    model, measured = _train(
        data,
        dataset.image_shape,
        dataset.evaluator_num_classes,
        config,
        reporter or NullReporter(),
        dataset.allows_hflip,
    )
    card = {
        "architecture": architecture_name(config),
        "recipe_version": RECIPE_VERSION,
        "feature_dim": FEATURE_DIM,
        "dataset": dataset.name,
        "trained_on": dataset.evaluator_trained_on,
        "data_content_sha256": {slot: source["content_sha256"] for slot, source in sorted(data.provenance.items())},
        "config": dataclasses.asdict(config),
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.evaluator_num_classes,
        "torch": torch.__version__,
        **measured,
    }
    return model, card


def save_evaluator(path: Path, model: DomainCNN, card: dict) -> str:
    """Write the weights and card as one file (readable with `weights_only=True`); return the file's sha256."""
    buffer = io.BytesIO()
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    plain_card = json.loads(json.dumps(card, default=str))  # plain types only (torch.__version__ is not a str)
    torch.save({"state_dict": state, "card": plain_card}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def read_evaluator(path: Path) -> tuple[DomainCNN, dict]:
    """The model and card of an evaluator file. Tensors and plain data only: a file that holds code is refused."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        card = checkpoint["card"]
        model = DomainCNN.from_config(card["image_shape"], card["num_classes"], card["config"])
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise EvaluatorWeightsError(
            f"{path} is not a readable domain evaluator file ({type(exc).__name__}: {exc})"
        ) from exc
    return model.eval(), card


def _trained_here(
    dataset_name: str, config: EvaluatorConfig | None, reporter: Reporter | None
) -> tuple[DomainCNN, dict, Path]:
    """An evaluator with no shipped file: trained on first use on this machine, then cached."""
    dataset, data = load_dataset(dataset_name)
    config = config or config_for(dataset.name)
    content = {slot: source["content_sha256"] for slot, source in sorted(data.provenance.items())}
    path = (
        cache_dir()
        / "evaluators"
        / dataset.name
        / f"{architecture_name(config)}-{_cache_key(dataset.name, content, config)}.pt"
    )
    if not path.is_file():
        model, card = train_evaluator(dataset.name, config, reporter)
        save_evaluator(path, model, card)
    model, card = read_evaluator(path)
    return (
        model,
        {**card, "origin": "trained on first use on this machine and cached (no shipped weights: not pinned)"},
        path,
    )


def load_domain_evaluator(
    dataset_name: str,
    config: EvaluatorConfig | None = None,
    reporter: Reporter | None = None,
    device: str = "cpu",
) -> DomainEvaluator:
    """The dataset's evaluator: its pinned shipped weights, or (no shipped file, or a non-default `config`) trained on
    first use and cached. A dataset measured by another's evaluator (`evaluator_dataset`: a folder made from it) gets
    that dataset's."""
    dataset_name = DATASETS.get(dataset_name).evaluator_dataset or dataset_name
    require_classes(dataset_name)
    dataset = DATASETS.get(dataset_name)
    if config is None and dataset.name in PINNED_WEIGHTS:
        path = find_pinned_weights(dataset.name)
        model, card = read_evaluator(path)
        expected = {
            "architecture": architecture_name(config_for(dataset.name)),
            "recipe_version": RECIPE_VERSION,
            "config": dataclasses.asdict(config_for(dataset.name)),
        }
        if {k: card.get(k) for k in expected} != expected:
            raise EvaluatorWeightsError(
                f"{path} was trained with another recipe than {dataset.name}'s current one ({expected}); train and pin a "
                f"new file with `bench evaluator train --dataset {dataset.name} --out FILE`"
            )
        card = {**card, "origin": "shipped weights, pinned by sha256 in bench/features/evaluator.py"}
    else:
        model, card, path = _trained_here(dataset.name, config, reporter)
    model.requires_grad_(False).to(device)
    card = {**card, "weights_sha256": file_sha256(path), "weights_path": str(path)}
    if card["test_accuracy"] < dataset.evaluator_min_accuracy:
        raise EvaluatorTooWeak(
            f"the {dataset.name} domain evaluator reached {card['test_accuracy']:.4f} test accuracy, below the required "
            f"{dataset.evaluator_min_accuracy}; its features are not trusted"
        )
    return DomainEvaluator(model, dataset.name, path, card)
