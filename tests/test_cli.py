import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import requires_data
from typer.testing import CliRunner

from bench.data.splits import load_dataset
from bench.harness.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--methods", "vaee", "--dataset", "fashion-mnist"], "Did you mean 'vae'?"),
        (["run", "--methods", "vae", "--dataset", "fashion-mnst"], "Did you mean 'fashion-mnist'?"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--profile", "quik"], "Did you mean 'quick'?"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--metrics", "mse,ssmi"], "Did you mean 'ssim'?"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--shots", "0"], "--shots must be"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--jobs", "0"], "--jobs and --threads must be at least 1"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--threads", "0"], "--jobs and --threads must be"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--seeds", "0,x"], "--seeds takes"),
        (["run", "--methods", "vae", "--dataset", "mnist", "--device", "tpu"], "--device"),
        (
            ["run", "--methods", "vae", "--dataset", "fashion-mnist", "--novel-class", "ankle bot"],
            "Did you mean 'Ankle boot'?",
        ),
        (["run", "--methods", "vae", "--dataset", "fashion-mnist", "--novel-class", "12"], "out of range"),
        (["list", "method"], "Did you mean 'methods'?"),
    ],
)
def test_bad_names_exit_2_with_valid_choices(args, expected, tmp_path):
    result = invoke(*args, *(["--results-dir", tmp_path / "r"] if args[0] == "run" else []))
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "r").exists()


def test_list_shows_every_registry():
    for what, name in (("methods", "vae"), ("metrics", "support_nn_mse"), ("datasets", "fashion-mnist")):
        result = invoke("list", what)
        assert result.exit_code == 0 and name in result.output


@requires_data("fashion-mnist")
def test_run_smoke_two_seeds_writes_records_and_leaderboard(tmp_path):
    result = invoke(
        "run",
        "--methods",
        "vae",
        "--dataset",
        "fashion-mnist",
        "--profile",
        "smoke",
        "--seeds",
        "0,1",
        "--samples",
        "60",
        "--results-dir",
        tmp_path / "results",
        "--json",
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["key"]["seed"] for r in records] == [0, 1] and all(r["status"] == "ok" for r in records)
    assert len(list((tmp_path / "results" / "runs").rglob("*.json"))) == 2
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    header = next(line for line in board.splitlines() if line.startswith("| method"))
    assert all(m in header for m in ("mse", "ssim", "support_nn_mse"))
    assert any(line.startswith("| `vae` | 2 |") for line in board.splitlines())


@requires_data("fashion-mnist")
def test_evaluate_scores_real_images_better_than_noise(tmp_path):
    _, data = load_dataset("fashion-mnist")
    real = data.train_images[data.train_labels == 9][-300:, 0]  # uint8 N x H x W
    noise = np.random.default_rng(0).random((300, 1, 28, 28)).astype(np.float32)  # float N x C x H x W
    np.savez(tmp_path / "real.npz", samples=real)
    np.savez(tmp_path / "noise.npz", noise)
    scores = {}
    for name in ("real", "noise"):
        result = invoke("evaluate", "--samples", tmp_path / f"{name}.npz", "--dataset", "fashion-mnist", "--json")
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(result.stdout)["metrics"]
    assert scores["real"]["mse"]["value"] < scores["noise"]["mse"]["value"]
    assert scores["real"]["ssim"]["value"] > scores["noise"]["ssim"]["value"]


@requires_data("fashion-mnist")
def test_evaluate_scores_a_folder_of_images_as_the_same_images_in_an_array(tmp_path):
    import cv2

    from bench.harness.samples import load_sample_folder

    _, data = load_dataset("fashion-mnist")
    real = data.train_images[data.train_labels == 9][-40:, 0]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index, image in enumerate(real):
        # Written as 56 x 56 RGB by pixel repetition: shrinking by area averaging and converting identical channels to
        # grey must give back exactly the 28 x 28 grey image.
        big = cv2.resize(image, (56, 56), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"{index:03d}.png"), np.repeat(big[:, :, None], 3, axis=2))
    (folder / "notes.txt").write_text("not an image")
    images, skipped = load_sample_folder(folder, (1, 28, 28))
    assert skipped == ["notes.txt"]
    assert np.array_equal((images[:, 0].numpy() * 255).round().astype(np.uint8), real)
    np.savez(tmp_path / "real.npz", samples=real)
    outputs = []
    for source in (folder, tmp_path / "real.npz"):
        result = invoke(
            "evaluate", "--samples", source, "--dataset", "fashion-mnist", "--metrics", "mse,ssim", "--json"
        )
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout))
    from_folder, from_array = ({name: o["value"] for name, o in out["metrics"].items()} for out in outputs)
    assert from_folder == from_array
    assert outputs[0]["folder"]["skipped"] == ["notes.txt"] and "INTER_AREA" in outputs[0]["folder"]["conversion"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    result = invoke("evaluate", "--samples", empty, "--dataset", "fashion-mnist")
    assert result.exit_code == 2 and "needs at least 2 readable images, found 0" in result.output


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((10, 28, 28), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((10, 32, 32), dtype=np.uint8), "shape"),
        (np.full((10, 28, 28), 2.0, dtype=np.float32), "[0, 1]"),
        (np.zeros((10, 28, 28), dtype=np.int64), "dtype"),
    ],
)
@requires_data("fashion-mnist")
def test_evaluate_rejects_bad_sample_files(tmp_path, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, samples=array)
    before = sorted(tmp_path.rglob("*"))
    result = invoke("evaluate", "--samples", path, "--dataset", "fashion-mnist")
    assert result.exit_code == 2 and message in result.output
    assert sorted(tmp_path.rglob("*")) == before


def test_check_exits_1_naming_the_regression(tmp_path):
    from test_leaderboard_check import SPLIT, record

    from bench.harness.leaderboard import card_fingerprint
    from bench.harness.store import ResultStore

    store = ResultStore(tmp_path / "results")
    store.write(record("vae", 0, 0.08, 0.2))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        json.dumps(
            {
                "schema": 2,
                "entries": [
                    {
                        "split_id": SPLIT,
                        "profile": "quick",
                        "method": "vae",
                        "metric": "mse",
                        "mean": 0.06,
                        "card": card_fingerprint({}),
                        "seeds": [0],
                    }
                ],
            }
        )
    )
    result = invoke("check", "--baseline", baseline, "--results-dir", tmp_path / "results")
    assert result.exit_code == 1 and "regression: vae mse" in result.output
    result = invoke("baseline", "--out", tmp_path / "new.json", "--results-dir", tmp_path / "results")
    assert result.exit_code == 0
    assert invoke("check", "--baseline", tmp_path / "new.json", "--results-dir", tmp_path / "results").exit_code == 0


@requires_data("fashion-mnist")
def test_novel_class_all_holds_out_each_class_in_turn(tmp_path):
    result = invoke(
        "run",
        "--methods",
        "vae,support-copy",
        "--dataset",
        "fashion-mnist",
        "--profile",
        "smoke",
        "--novel-class",
        "all",
        "--metrics",
        "mse,support_nn_mse",
        "--samples",
        "20",
        "--results-dir",
        tmp_path / "results",
        "--json",
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert sorted({r["split"]["novel_class"] for r in records}) == list(range(10)) and len(records) == 20
    _, data = load_dataset("fashion-mnist")
    for record in records:  # every run's support set comes from its own held-out class
        assert set(data.train_labels[list(record["split"]["support_indices"])]) == {record["split"]["novel_class"]}
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "fashion-mnist/novel*-4shot.v1 · profile `smoke` · class rotation over 10 held-out classes" in board
    rotation = board[board.index("class rotation over") :]
    assert "| `vae` | 1.00 |" in rotation and "`support-copy` (reference)" in rotation
    assert "| `support-copy` | " not in rotation  # reference rows are never ranked


@requires_data("cifar10")
def test_a_one_shot_rgb_run_lands_in_the_leaderboard(tmp_path):
    # Pixel, quality and likelihood metrics only, to keep it short; the evaluator metrics on RGB are covered by the
    # shipped weights' tests.
    result = invoke(
        "run",
        "--methods",
        "vae,support-copy",
        "--dataset",
        "cifar10",
        "--shots",
        "1",
        "--profile",
        "smoke",
        "--metrics",
        "mse,ssim,brisque,support_nn_mse,nll",
        "--samples",
        "40",
        "--results-dir",
        tmp_path / "results",
        "--json",
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert all(r["status"] == "ok" for r in records) and records[0]["split"]["split_id"] == "cifar10/novel9-1shot.v1"
    by_method = {r["key"]["method"]: r["metrics"] for r in records}
    assert all(o["status"] == "ok" for o in by_method["vae"].values())
    assert by_method["support-copy"]["nll"]["status"] == "not_applicable"  # it has no likelihood
    assert all(o["status"] == "ok" for name, o in by_method["support-copy"].items() if name != "nll")
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "## cifar10/novel9-1shot.v1 · profile `smoke`" in board and "| `vae` | 1 |" in board


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Real Fashion-MNIST images as PNG files, one sub-folder per class, plus one unreadable file."""
    import cv2

    _, data = load_dataset("fashion-mnist")
    root = tmp_path_factory.mktemp("images") / "shoes"
    for label, name in ((5, "sandal"), (7, "sneaker"), (9, "ankle_boot")):
        (root / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(data.train_labels == label)[:25]):
            cv2.imwrite(str(root / name / f"{i:03d}.png"), data.train_images[index, 0])
    (root / "sneaker" / "broken.png").write_bytes(b"not an image")
    return root


@requires_data("fashion-mnist")
def test_an_image_folder_runs_the_novel_class_protocol_end_to_end(tmp_path, image_folder):
    with pytest.warns(UserWarning, match=r"1 unreadable files skipped: \['sneaker/broken.png'\]"):
        result = invoke(
            "run",
            "--methods",
            "vae,support-copy",
            "--dataset",
            f"folder:{image_folder}@28",
            "--profile",
            "smoke",
            "--metrics",
            "mse,ssim,support_nn_mse",
            "--samples",
            "20",
            "--results-dir",
            tmp_path / "results",
            "--json",
            "--jobs",
            "1",  # in this process, where the warning can be caught
        )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert all(r["status"] == "ok" for r in records)
    split = records[0]["split"]
    assert split["split_id"].startswith("folder-shoes-") and split["novel_class_name"] == "sneaker"
    assert split["data_provenance"]["train_images"]["unreadable_files"] == ["sneaker/broken.png"]
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert f"## {split['split_id']} · profile `smoke`" in board


@requires_data("fashion-mnist")
def test_a_folder_runs_in_worker_processes_which_read_the_folder_themselves(tmp_path, image_folder):
    # Workers resolve the dataset again: from the folder spec, since the folder's name is registered only where it
    # was read.
    result = invoke(
        "run",
        "--methods",
        "support-copy,support-augment",
        "--dataset",
        f"folder:{image_folder}@28",
        "--profile",
        "smoke",
        "--metrics",
        "mse",
        "--samples",
        "20",
        "--results-dir",
        tmp_path / "results",
        "--json",
        "--jobs",
        "2",
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["status"] for r in records] == ["ok", "ok"] and records[0]["split"]["split_id"].startswith(
        "folder-shoes-"
    )


@requires_data("fashion-mnist")
def test_an_image_folder_split_keeps_reference_images_out_of_training(image_folder):
    from bench.data.datasets import DATASETS
    from bench.data.splits import make_split

    name = DATASETS.get(f"folder:{image_folder}@28").name
    first, again = make_split(name, shots=3, seed=0), make_split(name, shots=3, seed=0)
    assert first.info.sha256 == again.info.sha256 and first.task.image_shape == (1, 28, 28)
    assert len(first.reference) == 5 and first.info.n_base == 40  # 20% of the 25 sneakers; 80% of the other classes
    rows = lambda images: {bytes(r) for r in (images * 255).round().byte().flatten(1).numpy()}  # noqa: E731
    assert not rows(first.reference) & (rows(first.task.support) | rows(first.task.base_images))


def test_bad_image_folders_say_what_is_wrong(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(
        "run", "--methods", "vae", "--dataset", f"folder:{tmp_path / 'empty'}", "--results-dir", tmp_path / "r"
    )
    assert result.exit_code == 2 and "no files and no class sub-folders" in " ".join(result.output.split())
    (tmp_path / "one" / "cats").mkdir(parents=True)
    result = invoke(
        "run", "--methods", "vae", "--dataset", f"folder:{tmp_path / 'one'}", "--results-dir", tmp_path / "r"
    )
    assert result.exit_code == 2 and "at least 2 class sub-folders" in " ".join(result.output.split())
    result = invoke(
        "run", "--methods", "vae", "--dataset", f"folder:{tmp_path / 'missing'}", "--results-dir", tmp_path / "r"
    )
    assert result.exit_code == 1 and "is not a folder" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """40 real Fashion-MNIST ankle boots as PNG files directly in the folder (no classes), plus one unreadable file."""
    import cv2

    _, data = load_dataset("fashion-mnist")
    root = tmp_path_factory.mktemp("flat") / "boots"
    root.mkdir()
    for i, index in enumerate(np.flatnonzero(data.train_labels == 9)[:40]):
        cv2.imwrite(str(root / f"{i:03d}.png"), data.train_images[index, 0])
    (root / "notes.txt").write_text("not an image")
    return root


@requires_data("fashion-mnist")
def test_a_folder_without_classes_runs_the_unconditional_protocol(tmp_path, flat_folder, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no InceptionV3 weights here
    with pytest.warns(UserWarning, match="1 unreadable files skipped"):
        result = invoke(
            "run",
            "--methods",
            "vae,support-copy,imle",
            "--dataset",
            f"folder:{flat_folder}@28",
            "--shots",
            "36",
            "--profile",
            "smoke",
            "--metrics",
            "fid,density,class_consistency,mse,support_nn_mse",
            "--samples",
            "20",
            "--results-dir",
            tmp_path / "results",
            "--json",
            "--jobs",
            "1",  # in this process, where the warning can be caught
        )
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert all(r["status"] == "ok" for r in records), result.output
    split = records[0]["split"]
    assert split["protocol"] == "unconditional" and split["split_id"].endswith("/unconditional-36shot.v1")
    assert split["n_base"] == 0 and split["n_reference"] == 40
    metrics = records[0]["metrics"]
    assert metrics["mse"]["status"] == "ok" and metrics["support_nn_mse"]["status"] == "ok"
    # No classes, no domain evaluator: the distribution metrics use InceptionV3 and say which file is missing.
    assert "weights-inception-2015-12-05-6726825d.pth" in metrics["fid"]["reason"]
    # The metrics that only the domain evaluator can compute are not applicable, with the reason.
    for name in ("density", "class_consistency"):
        assert metrics[name]["status"] == "not_applicable" and "no classes" in metrics[name]["reason"]
    assert records[0]["training_log"]["pretrain"].startswith("skipped")
    assert records[2]["method"]["name"] == "imle" and records[2]["metrics"]["mse"]["status"] == "ok"
    # The support copies reach the support set exactly; the VAE does not.
    assert records[1]["metrics"]["support_nn_mse"]["value"] == pytest.approx(0, abs=1e-9)
    assert metrics["support_nn_mse"]["value"] > 1e-4


@requires_data("fashion-mnist")
def test_a_folder_without_classes_is_run_only_by_the_methods_that_need_neither_base_classes_nor_unseen_images(
    tmp_path, flat_folder
):
    from bench.harness.api import run_spec
    from methods import METHODS

    dataset = f"folder:{flat_folder}@28"
    chosen = run_spec("all", dataset=dataset, profile="smoke").methods
    assert "imle" in chosen and "support-copy" in chosen
    for name in ("figr", "vce", "cadavqvae", "imle-pretrained", "oracle"):
        assert name not in chosen
    assert all(not METHODS.get(m).needs_base_classes for m in chosen)
    # Naming one is an error before anything is built, with the reason and the methods that do run.
    result = invoke("run", "--methods", "imle,figr", "--dataset", dataset, "--results-dir", tmp_path / "results")
    assert result.exit_code == 2, result.output
    assert "figr trains on base classes" in result.output and "Methods that run on it: adaimle" in result.output
    assert not (tmp_path / "results").exists()
    # A dataset with base classes and class descriptions runs them all.
    assert {"figr", "cadavqvae"} <= set(run_spec("all", dataset="fashion-mnist").methods)


@requires_data("omniglot")
def test_a_dataset_without_class_descriptions_is_not_run_by_the_methods_conditioned_on_them(tmp_path):
    from bench.harness.api import run_spec

    chosen = run_spec("all", dataset="omniglot").methods
    assert "cadavqvae" not in chosen and "cadavqvae-plain" not in chosen and {"vce", "figr", "oracle"} <= set(chosen)
    result = invoke("run", "--methods", "cadavqvae", "--dataset", "omniglot", "--results-dir", tmp_path / "results")
    assert result.exit_code == 2 and "cadavqvae conditions on class descriptions" in result.output, result.output


@requires_data("fashion-mnist")
def test_the_unconditional_split_holds_out_a_seeded_tenth(flat_folder):
    from bench.data.datasets import DATASETS
    from bench.data.splits import make_run_split

    name = DATASETS.get(f"folder:{flat_folder}@28").name
    first, again, other = (make_run_split(name, 10, seed) for seed in (0, 0, 1))
    assert first.info.sha256 == again.info.sha256 != other.info.sha256
    assert len(first.held_out) == 4 and len(first.reference) == 40 and len(first.task.base_images) == 0
    rows = lambda images: {bytes(r) for r in (images * 255).round().byte().flatten(1).numpy()}  # noqa: E731
    # The held-out images are in the reference, never in any support draw; the support is in the reference.
    assert rows(first.held_out) <= rows(first.reference)
    for split in (first, other, make_run_split(name, 36, 2)):
        assert not rows(split.held_out) & rows(split.task.support) and rows(split.task.support) <= rows(split.reference)
    with pytest.raises(ValueError, match="exceeds the 36 train images"):
        make_run_split(name, 37, 0)


@requires_data("fashion-mnist")
def test_evaluate_uses_the_shipped_evaluator_and_trains_nothing(tmp_path, monkeypatch):
    from bench.features import evaluator

    monkeypatch.setattr(evaluator, "_train", lambda *a, **k: pytest.fail("bench evaluate must not train a ruler"))
    _, data = load_dataset("fashion-mnist")
    np.savez(tmp_path / "boots.npz", samples=data.train_images[data.train_labels == 9][-200:, 0])
    result = invoke(
        "evaluate",
        "--samples",
        tmp_path / "boots.npz",
        "--dataset",
        "fashion-mnist",
        "--metrics",
        "fid,coverage",
        "--json",
    )
    assert result.exit_code == 0, result.output
    fid = json.loads(result.stdout)["metrics"]["fid"]
    assert fid["card"]["feature_weights_sha256"] == evaluator.PINNED_WEIGHTS["fashion-mnist"].sha256


@requires_data("omniglot")
def test_evaluate_scores_a_stored_omniglot_sample_file_as_the_run_did(tmp_path):
    """Task sets: samples in task order, per-task metrics averaged, as `bench run` stores and scores them."""
    metrics = "mse,ssim,support_nn_mse"
    result = invoke(
        "run",
        "--methods",
        "support-augment",
        "--dataset",
        "omniglot",
        "--shots",
        "1",
        "--characters",
        "3",
        "--profile",
        "smoke",
        "--samples",
        "30",
        "--metrics",
        metrics,
        "--results-dir",
        tmp_path / "results",
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[result.stdout.index("[") :])[0]
    stored = tmp_path / "results" / record["artifacts"]["samples"]
    result = invoke(
        "evaluate",
        "--samples",
        stored,
        "--dataset",
        "omniglot",
        "--shots",
        "1",
        "--characters",
        "3",
        "--metrics",
        metrics,
        "--json",
    )
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)["metrics"]
    assert {name: scored[name]["value"] for name in scored} == {
        name: record["metrics"][name]["value"] for name in scored
    }
    np.savez(tmp_path / "odd.npz", samples=np.zeros((31, 28, 28), np.uint8))
    result = invoke(
        "evaluate", "--samples", tmp_path / "odd.npz", "--dataset", "omniglot", "--shots", "1", "--characters", "3"
    )
    assert result.exit_code == 2 and "cannot be divided among the 3 tasks" in result.output


@pytest.mark.parametrize(
    "arguments",
    [
        ["--help"],
        ["evaluate", "--samples", "no-such-file.npz", "--dataset", "fashion-mnist"],
        ["run", "--methods", "vae", "--dataset", "fashion-mnist", "--profile", "quik"],
        ["run", "--methods", "vae", "--dataset", "fashion-mnist", "--seeds", "0,x"],
        ["run", "--methods", "vae", "--dataset", "fashion-mnist", "--device", "gpu"],
        ["run", "--methods", "vae", "--dataset", "fashion-mnist", "--jobs", "0"],
        ["run", "--methods", "vae,vaee", "--dataset", "fashion-mnist"],
    ],
)
def test_a_bad_argument_is_answered_before_torch_is_imported(arguments):
    # Importing torch takes seconds; what needs no model must not wait for it. A fresh interpreter, since the
    # test process has torch loaded already.
    program = (
        "import sys\nfrom bench.harness.cli import main\n"
        f"sys.argv = ['bench', *{arguments!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('exit', code, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    code, torch_loaded = done.stderr.split()[-2:]
    expected = "0" if arguments == ["--help"] else "2"
    assert (code, torch_loaded) == (expected, "False"), done.stderr
