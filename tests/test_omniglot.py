"""Omniglot: image preparation, the omniglot-characters protocol and multi-task runs."""

import copy

import cv2
import numpy as np
import pytest
import torch
from conftest import failing_method, requires_data

from bench.data.datasets.omniglot import DRAWERS, N_BACKGROUND, N_EVALUATION, shrink
from bench.data.splits import load_dataset, make_character_tasks, make_split
from bench.harness.executor import run_benchmark
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore
from methods import METHODS

pytestmark = requires_data("omniglot")


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in (images * 255).round().to(torch.uint8).flatten(1).numpy()}


def test_vectorised_area_resize_equals_opencv_per_image():
    drawings = np.load(load_dataset("omniglot")[1].provenance["evaluation"]["path"])["images"][:2, :5]
    expected = np.stack(
        [
            [
                np.round(cv2.resize((~d).astype(np.float32), (28, 28), interpolation=cv2.INTER_AREA) * 255)
                for d in character
            ]
            for character in drawings
        ]
    )
    np.testing.assert_array_equal(shrink(drawings)[:, :, 0], expected.astype(np.uint8))


def test_loaded_arrays_hold_ink_as_white_and_divide_drawers_for_the_evaluator():
    dataset, data = load_dataset("omniglot")
    assert data.train_images.shape == (N_BACKGROUND * 16, 1, 28, 28) and data.test_images.shape == (
        N_BACKGROUND * 4,
        1,
        28,
        28,
    )
    assert data.extra["evaluation_images"].shape == (N_EVALUATION, DRAWERS, 1, 28, 28)
    # Ink is a minority of the pixels: the background is black after inversion.
    assert data.train_images.mean() < 40
    assert set(np.unique(data.train_labels)) == set(range(N_BACKGROUND)) == set(np.unique(data.test_labels))
    assert dataset.evaluator_num_classes == N_BACKGROUND and dataset.num_classes == N_BACKGROUND + N_EVALUATION


@pytest.mark.parametrize("shots", [1, 5])
def test_character_tasks_follow_the_protocol(shots):
    dataset, data = load_dataset("omniglot")
    tasks = make_character_tasks("omniglot", shots=shots, seed=0, characters=6)
    assert tasks.info.split_id == f"omniglot/characters6-{shots}shot.v1" and len(tasks.splits) == 6
    evaluation = data.extra["evaluation_images"]
    base_rows = _rows(tasks.splits[0].task.base_images)
    assert len(base_rows) > 0.9 * N_BACKGROUND * DRAWERS  # every background drawing (few exact duplicates)
    for entry, split in zip(tasks.info.tasks, tasks.splits):
        character = split.info.novel_class - N_BACKGROUND
        assert 0 <= character < N_EVALUATION and entry["novel_class"] == split.info.novel_class
        drawers = list(split.info.support_indices)
        others = [d for d in range(DRAWERS) if d not in drawers]
        assert len(drawers) == shots and split.reference.shape[0] == DRAWERS - shots
        np.testing.assert_array_equal(
            (split.task.support * 255).round().to(torch.uint8).numpy(), evaluation[character, drawers]
        )
        np.testing.assert_array_equal(
            (split.reference * 255).round().to(torch.uint8).numpy(), evaluation[character, others]
        )
        # No reference drawing is in the support set or in the base (training) data.
        assert not _rows(split.reference) & _rows(split.task.support)
        assert not _rows(split.reference) & base_rows
        assert not (split.task.base_labels >= N_BACKGROUND).any()


def test_character_draw_is_seeded_and_independent():
    a, b, c = (make_character_tasks("omniglot", 1, seed, 5) for seed in (0, 0, 1))
    assert a.info.tasks == b.info.tasks and a.info.sha256 == b.info.sha256
    assert a.info.tasks != c.info.tasks and a.info.sha256 != c.info.sha256
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(N_EVALUATION, 5, replace=False))
    assert [t["novel_class"] for t in a.info.tasks] == (chosen + N_BACKGROUND).tolist()
    assert a.info.tasks[0]["support_drawers"] == rng.choice(DRAWERS, 1, replace=False).tolist()


def test_protocol_errors_are_clear():
    with pytest.raises(ValueError, match="characters"):
        make_character_tasks("omniglot", 1, 0, characters=0)
    with pytest.raises(ValueError, match="shots"):
        make_character_tasks("omniglot", 20, 0, characters=3)
    with pytest.raises(ValueError, match="omniglot-characters"):
        make_split("omniglot", 1, 0)
    from bench.data.datasets import DATASETS

    with pytest.raises(ValueError, match="--characters"):
        DATASETS.get("omniglot").novel_classes("all")


def test_pretraining_once_and_adapting_copies_equals_fitting_each_task():
    tasks = make_character_tasks("omniglot", 1, 0, characters=2)
    cls = METHODS.get("vae")
    budget = cls.budget_for("smoke")
    pretrained = cls()
    pretrained.pretrain(tasks.splits[0].task, budget, 0)
    for split in tasks.splits:
        adapted = copy.deepcopy(pretrained)
        adapted.adapt(split.task, budget, 0)
        fitted = cls()
        fitted.fit(split.task, budget, 0)
        a = adapted.sample(8, torch.Generator().manual_seed(1))
        b = fitted.sample(8, torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_run_over_characters_stores_per_task_metrics_and_their_mean(tmp_path):
    store = ResultStore(tmp_path)
    spec = RunSpec(
        ["vae"],
        dataset="omniglot",
        shots=1,
        seeds=[0],
        profile="smoke",
        characters=3,
        n_samples=30,
        metrics=["mse", "support_nn_mse", "nll", "class_consistency"],
    )
    outcome = run_benchmark(spec, store)[0]
    record = outcome.record
    assert outcome.status == "ok" and record["key"]["split_id"] == "omniglot/characters3-1shot.v1"
    assert len(record["tasks"]) == 3 and record["evaluation"]["n_samples_per_task"] == 10
    for name in ("mse", "support_nn_mse", "nll"):
        per_task = [task["metrics"][name]["value"] for task in record["tasks"]]
        assert record["metrics"][name]["value"] == pytest.approx(np.mean(per_task))
    # The evaluator knows only background characters: class consistency says so instead of scoring 0.
    assert record["metrics"]["class_consistency"]["status"] == "not_applicable"
    assert "background characters" in record["metrics"]["class_consistency"]["reason"]
    # The stored samples say which task each belongs to; each task's mse is reproduced from them.
    stored = np.load(store.root / record["artifacts"]["samples"])
    assert stored["samples"].shape == (30, 1, 28, 28) and stored["task"].tolist() == [0] * 10 + [1] * 10 + [2] * 10
    from bench.harness.evaluation import evaluate

    split = make_character_tasks("omniglot", 1, 0, 3).splits[1]
    samples = torch.from_numpy(stored["samples"][stored["task"] == 1]).float() / 255
    outcomes, _ = evaluate(samples, reference=split.reference, support=split.task.support, metric_names=["mse"])
    assert outcomes["mse"]["value"] == pytest.approx(record["tasks"][1]["metrics"]["mse"]["value"])
    # A second run finds it stored and up to date.
    assert run_benchmark(spec, store)[0].status == "skipped"


@pytest.mark.parametrize("name", ["dcgan", "cgan", "infogan", "figr"])
def test_every_gan_runs_over_characters(tmp_path, name):
    """No per-dataset code in the methods: the GANs take Omniglot's shape and its 1,623 classes from the task."""
    spec = RunSpec(
        [name],
        dataset="omniglot",
        shots=1,
        seeds=[0],
        profile="smoke",
        characters=2,
        n_samples=8,
        metrics=["mse", "support_nn_mse"],
    )
    outcome = run_benchmark(spec, ResultStore(tmp_path))[0]
    assert outcome.status == "ok", outcome.record.get("failure")
    assert all(outcome.record["metrics"][m]["status"] == "ok" for m in ("mse", "support_nn_mse"))


def test_a_run_that_fails_on_one_character_names_it(tmp_path, monkeypatch):
    """A task set's failure says which task failed: the reason the leaderboard prints is the record's."""
    failing = failing_method("finetune: loss became nan at step 3", on_fit=2)
    monkeypatch.setitem(METHODS._entries, "fails-on-second-task", failing)
    spec = RunSpec(
        ["fails-on-second-task"], dataset="omniglot", shots=1, seeds=[0], profile="smoke", characters=3, n_samples=30
    )
    store = ResultStore(tmp_path)
    outcome = run_benchmark(spec, store)[0]
    failure = store.load(outcome.key)["failure"]
    second = make_character_tasks("omniglot", 1, 0, 3).splits[1].info.novel_class_name
    assert outcome.status == "failed" and failure["diverged"] is True
    assert failure["reason"] == f"task 1 ({second}), 2 of 3: finetune: loss became nan at step 3"
