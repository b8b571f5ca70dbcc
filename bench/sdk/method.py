"""The method protocol: what every few-shot generator implements, and what it may optionally offer.

A method is a class with a flat config dataclass (`Config`, architecture and optimiser
settings with working defaults) and a budget dataclass (`Budget`, how long to train, in
steps or epochs, never wall-clock), named budgets in `profiles` (`smoke`, `quick`,
`standard`, `paper`), and two required calls:

- `fit(task, budget, seed)`: train on a `FewShotTask` (base images + k support images);
- `sample(n, generator)`: return n float images in [0, 1], shape (n, C, H, W).

Optional capabilities are declared in `capabilities`, never guessed from attributes:

- `"latent"`: `latent_dim`, `sample_latent(n, generator)` and `decode(z)`; samples are
  `decode(sample_latent(...))`, and `decode` is differentiable in z (LPIPS backtracking
  optimises latents through it);
- `"latent_prior"` (with `"latent"`): `latent_prior() -> bench.sdk.ais.LatentPrior`, the
  distribution `sample_latent` draws from, written as a mixture of standard normal noise mapped
  to the latent (what AIS anneals from: the `nll_ais` metric); `StandardNormalLatent` gives both
  for z ~ N(0, I);
- `"log_likelihood"`: `log_likelihood(x, num_samples=1000, generator=None) -> Tensor`: for
  images x (n, C, H, W) in [0, 1], a float64 CPU tensor (n,) of log p(x) in nats per image,
  estimated with `num_samples` importance samples (latent-variable methods reuse
  `bench.sdk.likelihood.iwae_log_likelihood`), noise drawn only from the CPU `generator` (None: a
  generator seeded with 0). The observation is `bench.sdk.likelihood.observe`'s: the binarised
  image (x > 0.5) for grey-scale data, the 8-bit values for colour (p(x) a probability mass over
  the 256 levels of each subpixel). The `nll` metric passes observed images, and a method makes
  the observation of its input itself too (a no-op on observed images), so any [0, 1] input is
  scored as its observation.
  It runs without gradients in eval mode (e.g. BatchNorm running statistics) and restores the
  model's mode;
- `"reconstruct"`: `reconstruct(x)`;
- `"embed"`: `embed(x)`, a feature vector per image (for latent-space plots);
- `"transfer"`: `pretrain(task, budget, seed)` and `adapt(task, budget, seed)`, where `fit` is
  exactly `pretrain` then `adapt`. `pretrain` may use only the base images (and the task's
  shape, class count and flags), never its support set, so that a run over several tasks
  sharing one base set (Omniglot's novel characters) pretrains once and adapts a copy per task
  with the same result as fitting each task from scratch. `PretrainThenAdapt` implements both
  and hands the noise generator from one to the other; a method writes what each phase trains.
  A transfer method whose algorithm *is* its base-class phase (meta-training, a pretrained
  generator) sets `needs_base_classes`: on a task without base images (the unconditional
  protocol) it would otherwise be another method under its name, so `pretrain` refuses it, and
  `bench run --methods all` on a folder leaves it out. `needs_class_descriptions` is the same for
  a method conditioned on the classes' descriptions (Omniglot and folders have none).

A metric that needs a capability the method lacks is recorded as not applicable.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from bench.sdk.ais import LatentPrior
from bench.sdk.profiles import PROFILES
from bench.sdk.progress import NullReporter, Reporter
from bench.sdk.registry import UnknownNameError, key_for_module
from bench.sdk.task import FewShotTask

CAPABILITIES = {
    "latent": ("latent_dim", "sample_latent", "decode"),
    "latent_prior": ("latent_prior",),
    "log_likelihood": ("log_likelihood",),
    "reconstruct": ("reconstruct",),
    "embed": ("embed",),
    "transfer": ("pretrain", "adapt"),
}


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the run is recorded as failed with this reason."""


class Method(abc.ABC):
    """Base class of every registered method (see the module docstring for the protocol)."""

    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Config: ClassVar[type]
    Budget: ClassVar[type]
    profiles: ClassVar[dict[str, Any]]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # Reference rows (oracle, copies of the support set) are run like methods but never ranked.
    is_reference: ClassVar[bool] = False
    # Only a reference row may see the novel class's other train images (`FewShotTask.unseen_novel`).
    sees_unseen_novel_images: ClassVar[bool] = False
    # The algorithm is its base-class phase (with `transfer`): refused on a task without base images.
    needs_base_classes: ClassVar[bool] = False
    # Conditions on the classes' descriptions (`FewShotTask.class_descriptions`; with `transfer`): refused without.
    needs_class_descriptions: ClassVar[bool] = False
    # How many images `sample` produces per forward pass; bounds memory on large requests.
    sample_batch_size: ClassVar[int] = 500
    # For `log_likelihood`: what p(x) is when it is not the plain marginal of an unconditional
    # model (e.g. VCE's likelihood conditional on the support images); the `nll` card carries it.
    likelihood_description: ClassVar[str] = ""

    def __init__(self, config: Any = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.timings: dict[str, float] = {}
        self.training_log: dict[str, Any] = {}
        self.reporter: Reporter = NullReporter()

    # -- required -------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, task: FewShotTask, budget: Any, seed: int) -> None:
        """Train on `task` for `budget`; all randomness derives from `seed`."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Return `n` images in [0, 1], shape (n, C, H, W), drawn with `generator`."""

    # -- helpers for subclasses -----------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of `fit` (e.g. `pretrain`, `finetune`); the runner stores the timings."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    # -- measuring during training --------------------------------------------------
    # Whether `fit` calls `training_checkpoint` (then `bench curve fid` can follow a metric over its training).
    reports_checkpoints: ClassVar[bool] = False
    # Set by the harness, never by a method: called at each checkpoint with (method, phase, step, total). It samples
    # with its own generator and restores the networks' modes, so a fit with a probe equals a fit without.
    training_probe: Callable[[Method, str, int, int], None] | None = None

    def training_checkpoint(self, phase: str, step: int, total: int) -> None:
        """Where the model is a complete generator during `fit` (e.g. after a round): `step` of `total` in `phase`."""
        if self.training_probe is not None:
            self.training_probe(self, phase, step, total)

    @classmethod
    def budget_for(cls, profile: str) -> Any:
        if profile not in cls.profiles:
            raise UnknownNameError("profile", profile, list(cls.profiles))
        return cls.profiles[profile]

    @classmethod
    def validate_definition(cls, name: str) -> None:
        """Checked at registration: a method that breaks the protocol fails loudly at import."""
        for attr in ("Config", "Budget"):
            if not dataclasses.is_dataclass(getattr(cls, attr, None)):
                raise TypeError(f"method '{name}': {attr} must be a dataclass")
        missing = [p for p in PROFILES if p not in getattr(cls, "profiles", {})]
        if missing:
            raise TypeError(f"method '{name}': profiles {missing} are missing")
        for profile, budget in cls.profiles.items():
            if not isinstance(budget, cls.Budget):
                raise TypeError(f"method '{name}': profile '{profile}' is not a {cls.Budget.__name__}")
        if cls.sees_unseen_novel_images and not cls.is_reference:
            raise TypeError(f"method '{name}': only reference rows may see the novel class's unseen images")
        for need in ("needs_base_classes", "needs_class_descriptions"):
            if getattr(cls, need) and "transfer" not in cls.capabilities:
                raise TypeError(f"method '{name}': {need} is checked by `pretrain`; declare 'transfer'")
        if inspect.isabstract(cls):
            raise TypeError(f"method '{name}' does not implement {sorted(cls.__abstractmethods__)}")
        for capability in cls.capabilities:
            if capability not in CAPABILITIES:
                raise TypeError(f"method '{name}': unknown capability '{capability}' (known: {sorted(CAPABILITIES)})")
            for attr in CAPABILITIES[capability]:
                if not hasattr(cls, attr):
                    raise TypeError(f"method '{name}' declares '{capability}' but has no '{attr}'")

    @classmethod
    def what_is_missing(cls, *, base_images: bool, class_descriptions: bool, unseen_novel_images: bool) -> str | None:
        """Why this method cannot run on data with (or without) these parts, or None if it can: the one reading of
        the declarations above, for `pretrain` (a task in hand) and the harness (a dataset, before it is loaded)."""
        if cls.needs_base_classes and not base_images:
            return "trains on base classes, which this data does not have"
        if cls.sees_unseen_novel_images and not unseen_novel_images:
            return "draws the novel class's unseen images, which this data does not have"
        if cls.needs_class_descriptions and not class_descriptions:
            return (
                "conditions on class descriptions, which this data does not have "
                "(`bench list datasets` shows which datasets have them)"
            )
        return None


class PretrainThenAdapt(abc.ABC):
    """Mixin for methods with the `transfer` capability: `fit` is exactly `pretrain` then `adapt`, and
    the noise stream is handed from one to the other.

    A method implements `pretrain_on_base(task, budget, seed, generator)` (the base images only;
    `seed` is for `seeded_init`, every other random draw comes from `generator`) and
    `adapt_to_support(task, budget, generator)`. `pretrain` seeds a CPU generator with the run's
    seed and keeps its state at the end; `adapt` continues from that state. So adapting a copy of
    one pretrained method per task (the runner does this for a task set sharing one base set)
    draws the same numbers as one `fit` per task.
    """

    @abc.abstractmethod
    def pretrain_on_base(self, task: FewShotTask, budget: Any, seed: int, generator: torch.Generator) -> None:
        """Train on the base classes of `task` (never its support set), drawing noise from `generator`."""

    @abc.abstractmethod
    def adapt_to_support(self, task: FewShotTask, budget: Any, generator: torch.Generator) -> None:
        """Adapt the pretrained model to the support set of `task`, drawing noise from `generator`."""

    def fit(self, task: FewShotTask, budget: Any, seed: int) -> None:
        self.pretrain(task, budget, seed)
        self.adapt(task, budget, seed)

    def pretrain(self, task: FewShotTask, budget: Any, seed: int) -> None:
        # Unseen novel images are for reference rows only (`validate_definition`), which do not pretrain.
        missing = self.what_is_missing(
            base_images=bool(len(task.base_images)),
            class_descriptions=bool(task.class_descriptions),
            unseen_novel_images=True,
        )
        if missing:
            raise ValueError(f"{key_for_module(type(self).__module__)} on {task.info.dataset}: {missing}")
        generator = torch.Generator().manual_seed(seed)
        self.pretrain_on_base(task, budget, seed, generator)
        self._noise_after_pretraining = generator.get_state()

    def adapt(self, task: FewShotTask, budget: Any, seed: int) -> None:
        """Adapt with the noise stream where `pretrain` left it (`seed` acted through `pretrain`)."""
        if not hasattr(self, "_noise_after_pretraining"):
            raise RuntimeError(f"{type(self).__name__}.adapt needs a pretrained model: call pretrain first (or fit)")
        generator = torch.Generator()
        generator.set_state(self._noise_after_pretraining)
        self.adapt_to_support(task, budget, generator)


class SamplesFromLatent:
    """Mixin for methods with the `latent` capability: `sample` is `decode(sample_latent(n))`,
    decoded in chunks of `sample_batch_size` to bound memory."""

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = self.sample_latent(n, generator)
        return torch.cat([self.decode(chunk) for chunk in z.split(self.sample_batch_size)])


class StandardNormalLatent:
    """Mixin for a latent z ~ N(0, I_latent_dim): `sample_latent` draws it and `latent_prior` declares it,
    so the two cannot disagree (declare `"latent_prior"` in `capabilities`)."""

    latent_dim: int

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def latent_prior(self) -> LatentPrior:
        return LatentPrior.standard_normal(self.latent_dim)


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """Reference rows have nothing to configure beyond what the split gives them."""


@dataclasses.dataclass(frozen=True)
class NoTraining:
    """Reference rows do not train: every profile is the same empty budget."""


class ReferenceRow(Method):
    """Base of the reference rows: run like methods, stored like methods, never ranked among them.

    They give every leaderboard table its scale: the oracle (real unseen images of the class, the
    ceiling under this protocol) and the copy floors (the support set repeated or augmented).
    """

    is_reference = True
    Config, Budget = NoConfig, NoTraining
    profiles = {profile: NoTraining() for profile in PROFILES}

    def fit(self, task: FewShotTask, budget: Any, seed: int) -> None:
        """Nothing to train: keep what the samples are drawn from (the seed acts through the split's support draw)."""
        with self.phase("prepare"):
            self.prepare(task)

    @abc.abstractmethod
    def prepare(self, task: FewShotTask) -> None:
        """Keep the images that `sample` draws from."""
