"""The domain evaluator's training is a pure function of its data and config."""

from types import SimpleNamespace

import numpy as np
import torch

from bench.features.evaluator import DomainCNN, EvaluatorConfig, _train, weights_digest
from bench.sdk.progress import NullReporter


def _tiny_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=512).astype(np.uint8)
    images = (rng.random((512, 1, 12, 12)) * 80).astype(np.uint8)
    images[np.arange(512), 0, labels * 4, :] = 255  # a learnable class signal: a bright row per class
    images.setflags(write=False)  # as the loaded memory-mapped arrays are
    return SimpleNamespace(train_images=images, train_labels=labels, test_images=images[:128], test_labels=labels[:128])


def test_training_twice_gives_identical_weights_and_a_different_seed_does_not():
    config = EvaluatorConfig(width=4, epochs=1, batch_size=64)
    first, card = _train(_tiny_data(), (1, 12, 12), 3, config, NullReporter())
    second, _ = _train(_tiny_data(), (1, 12, 12), 3, config, NullReporter())
    other, _ = _train(
        _tiny_data(), (1, 12, 12), 3, EvaluatorConfig(width=4, epochs=1, batch_size=64, seed=1), NullReporter()
    )
    assert weights_digest(first) == weights_digest(second)
    assert weights_digest(first) != weights_digest(other)
    assert card["test_accuracy"] > 0.6  # well above chance (1/3): training did run


def test_weights_digest_sees_every_parameter():
    model = DomainCNN((1, 12, 12), 3, 4)
    before = weights_digest(model)
    with torch.no_grad():
        model.classifier[1].bias[0] += 1e-6
    assert weights_digest(model) != before


# -- the shipped, pinned evaluators -------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402
from conftest import requires_data  # noqa: E402

from bench.features import evaluator as module  # noqa: E402
from bench.features.evaluator import (  # noqa: E402
    PINNED_WEIGHTS,
    EvaluatorWeightsError,
    find_pinned_weights,
    load_domain_evaluator,
    read_evaluator,
)


def test_every_dataset_with_classes_ships_pinned_weights():
    from bench.data.datasets import DATASETS
    from bench.data.datasets.folder import FolderDataset

    # Image folders (registered by `folder:PATH`) cannot be covered by a shipped file: they train on first use.
    with_classes = {
        name
        for name in DATASETS.names()
        if DATASETS.get(name).evaluator_num_classes >= 2 and not isinstance(DATASETS.get(name), FolderDataset)
    }
    assert with_classes == set(PINNED_WEIGHTS)
    for name in PINNED_WEIGHTS:
        assert find_pinned_weights(name).parent == module.SHIPPED_WEIGHTS_DIR


@pytest.mark.parametrize("dataset", sorted(PINNED_WEIGHTS))
def test_the_pinned_accuracy_is_what_the_shipped_weights_score_on_the_test_split(dataset):
    """Recomputed here from the test split, not read from the file's card."""
    from bench.data.splits import load_dataset

    try:
        spec, data = load_dataset(dataset)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{dataset} files not found: {exc}")
    model, _ = read_evaluator(find_pinned_weights(dataset))
    with torch.no_grad():
        test = torch.from_numpy(data.test_images.astype("float32"))
        predictions = torch.cat([model(chunk.div(255))[1].argmax(1) for chunk in test.split(1000)])
    accuracy = float((predictions == torch.from_numpy(data.test_labels.astype("int64"))).float().mean())
    assert accuracy == pytest.approx(PINNED_WEIGHTS[dataset].test_accuracy, abs=1e-6)
    assert accuracy >= spec.evaluator_min_accuracy


@requires_data("fashion-mnist")
def test_loading_the_shipped_evaluator_trains_nothing_and_its_card_names_the_pinned_digest(monkeypatch):
    monkeypatch.setattr(module, "_train", lambda *a, **k: pytest.fail("a shipped evaluator must not be retrained"))
    evaluator = load_domain_evaluator("fashion-mnist")
    assert evaluator.card["weights_sha256"] == PINNED_WEIGHTS["fashion-mnist"].sha256
    assert evaluator.card["origin"].startswith("shipped")


def test_a_missing_file_is_an_error_naming_it_and_how_to_restore_it(monkeypatch, tmp_path):
    monkeypatch.setattr(module, "SHIPPED_WEIGHTS_DIR", tmp_path)
    with pytest.raises(EvaluatorWeightsError) as info:
        load_domain_evaluator("fashion-mnist")
    message = str(info.value)
    assert (
        PINNED_WEIGHTS["fashion-mnist"].file in message
        and "git checkout" in message
        and "bench evaluator train" in message
    )


def test_an_altered_file_is_refused_and_the_override_folder_is_searched_first(monkeypatch, tmp_path):
    name = PINNED_WEIGHTS["fashion-mnist"].file
    altered = tmp_path / name
    altered.write_bytes(find_pinned_weights("fashion-mnist").read_bytes() + b"\0")
    monkeypatch.setenv("BENCH_EVALUATOR_DIR", str(tmp_path))
    with pytest.raises(EvaluatorWeightsError, match="is pinned to"):
        load_domain_evaluator("fashion-mnist")
    altered.write_bytes((module.SHIPPED_WEIGHTS_DIR / name).read_bytes())  # the genuine file in the override folder
    assert find_pinned_weights("fashion-mnist") == altered


def test_an_evaluator_file_that_holds_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "card": SimpleNamespace(x=1)}, path)  # an arbitrary object: needs unpickling code
    with pytest.raises(EvaluatorWeightsError, match="not a readable domain evaluator file"):
        read_evaluator(path)


def test_saved_evaluators_round_trip_to_identical_weights(tmp_path):
    config = EvaluatorConfig(width=4, epochs=1, batch_size=64)
    model, card = _train(_tiny_data(), (1, 12, 12), 3, config, NullReporter())
    card = {**card, "config": __import__("dataclasses").asdict(config), "image_shape": [1, 12, 12], "num_classes": 3}
    digest = module.save_evaluator(tmp_path / "e.pt", model, card)
    loaded, loaded_card = read_evaluator(tmp_path / "e.pt")
    assert weights_digest(loaded) == weights_digest(model)
    assert module.file_sha256(tmp_path / "e.pt") == digest and loaded_card["test_accuracy"] == card["test_accuracy"]


def test_bench_evaluator_list_shows_each_pinned_file_and_where_it_was_found():
    from typer.testing import CliRunner

    from bench.harness.cli import app

    result = CliRunner().invoke(app, ["evaluator", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["dataset"]: row for row in json.loads(result.stdout)}
    for name, pinned in PINNED_WEIGHTS.items():
        assert rows[name]["sha256"] == pinned.sha256 and rows[name]["found_at"].endswith(pinned.file)
