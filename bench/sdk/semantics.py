"""Class semantics: one sentence-embedding vector per class, from the dataset's hand-written class descriptions.

The semantic modality of text-conditioned methods (`cadavqvae`). Each dataset that has them
lists one short visual description per class (`ImageDataset.class_descriptions`, e.g. "an ankle
boot: a shoe whose shaft covers the ankle, with a thick sole and a low heel"); this module embeds
them with WordLlama (Miller, 2024; the `l2_supercat` model at 256 dimensions: token embeddings
distilled from Llama 2's embedding layer, average-pooled over the sentence), which ships inside
the `wordllama` wheel, so it runs offline. Vectors are scaled to unit length.

`class_embeddings(descriptions)` returns the (num_classes, 256) float32 table of a task's
`class_descriptions`; `embedding_card(descriptions)` says what produced it (model, dimension,
package version, sha256 of the weights file and of the descriptions), for the run record's
training log. Both are cached per set of descriptions in this process.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import torch

MODEL_CONFIG = "l2_supercat"
MODEL_DIM = 256

_MODEL: Any = None
_CACHE: dict[str, tuple[torch.Tensor, dict]] = {}


def descriptions_sha256(descriptions: tuple[str, ...]) -> str:
    """sha256 of the descriptions as a JSON list (UTF-8): changes whenever any sentence changes."""
    return hashlib.sha256(json.dumps(list(descriptions), ensure_ascii=False).encode()).hexdigest()


def _load_model() -> Any:
    """The WordLlama model from the files inside the installed wheel; never touches the network."""
    global _MODEL
    if _MODEL is None:
        try:
            import wordllama
            from wordllama import WordLlama

            # `WordLlama.load()` looks for the bundled tokenizer in `wordllama/tokenizer/` (its file
            # type, singular) while the wheel ships it in `wordllama/tokenizers/`; not finding it, it
            # tries to download it from Hugging Face. Pointing `cache_dir` at the package folder makes
            # its cache look-up (`<cache_dir>/tokenizers/`, `<cache_dir>/weights/`) find both bundled
            # files, and `disable_download` turns any miss into an error instead of a network call.
            _MODEL = WordLlama.load(
                config=MODEL_CONFIG,
                dim=MODEL_DIM,
                cache_dir=pathlib.Path(wordllama.__file__).parent,
                disable_download=True,
            )
        except Exception as exc:  # ImportError, FileNotFoundError from the loader, a broken weights file...
            raise RuntimeError(
                f"cannot load the WordLlama sentence-embedding model ({MODEL_CONFIG}, {MODEL_DIM} dims) from the "
                f"installed `wordllama` package: {type(exc).__name__}: {exc}. The class semantics need "
                f"`wordllama==0.4.0.post1` (pinned in pyproject.toml), whose wheel ships the weights and tokenizer."
            ) from exc
    return _MODEL


def _weights_sha256() -> str:
    import wordllama

    path = pathlib.Path(wordllama.__file__).parent / "weights" / f"{MODEL_CONFIG}_{MODEL_DIM}.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unknown"


def _embed(descriptions: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    if not descriptions:
        raise ValueError(
            "no class descriptions were given: the task's dataset has no semantic modality "
            "(datasets with descriptions: see `bench list datasets`)"
        )
    key = descriptions_sha256(tuple(descriptions))
    if key not in _CACHE:
        import wordllama

        model = _load_model()
        vectors = torch.from_numpy(model.embed(list(descriptions))).float()
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
        card = {
            "source": "class_descriptions of the dataset (one hand-written sentence per class)",
            "model": f"WordLlama {MODEL_CONFIG} (average-pooled token embeddings), bundled in the wheel",
            "dim": int(vectors.shape[1]),
            "normalisation": "unit L2 norm",
            "package": f"wordllama {wordllama.__version__}",
            "weights_sha256": _weights_sha256(),
            "descriptions_sha256": key,
        }
        _CACHE[key] = (vectors, card)
    return _CACHE[key]


def class_embeddings(descriptions: tuple[str, ...]) -> torch.Tensor:
    """(num_classes, 256) float32 unit vectors, row c embedding the description of class c.

    Raises ValueError when there are no descriptions and RuntimeError if the embedding model cannot
    be loaded (saying what failed).
    """
    return _embed(descriptions)[0].clone()


def embedding_card(descriptions: tuple[str, ...]) -> dict:
    """What produced `class_embeddings(descriptions)`: model, dimension, package version, weights and descriptions sha256."""
    return dict(_embed(descriptions)[1])
