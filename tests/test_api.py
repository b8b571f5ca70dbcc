"""The Python API (`bench.evaluate`, `bench.run`): what README shows, against the CLI's and the array's results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import requires_data

import bench
from bench.data.splits import load_dataset
from bench.harness.samples import SampleFileError
from bench.sdk.registry import UnknownNameError

METRICS = ["mse", "ssim", "coverage", "nll"]


@pytest.fixture(scope="module")
def boots():
    _, data = load_dataset("fashion-mnist")
    return data.train_images[data.train_labels == 9][-120:, 0]  # uint8 (N, 28, 28)


@requires_data("fashion-mnist")
def test_a_generator_callable_sampled_in_batches_scores_as_the_array_it_draws_from(boots):
    asked = []

    def generator(n):
        asked.append(n)
        start = sum(asked[:-1])
        return boots[start : start + n].astype(np.float32) / 255.0  # float in [0, 1], no channel axis

    from_callable = bench.evaluate(generator, dataset="fashion-mnist", metrics=METRICS, n=120, batch_size=50)
    from_array = bench.evaluate(boots, dataset="fashion-mnist", metrics=",".join(METRICS))
    assert asked == [50, 50, 20]
    for name in ("mse", "ssim", "coverage"):
        assert from_callable[name] == pytest.approx(from_array[name], rel=1e-6)
    frame = from_array.frame()
    assert list(frame.index) == METRICS and frame.loc["ssim", "better"] == "higher"
    assert frame.loc["nll", "status"] == "not_applicable"
    with pytest.raises(KeyError, match="nll has no value: not_applicable"):
        from_array["nll"]
    assert from_array.outcomes["coverage"]["card"]


@requires_data("fashion-mnist")
def test_real_boots_score_better_than_noise_through_the_api(boots):
    noise = np.random.default_rng(0).integers(0, 256, boots.shape, dtype=np.uint8)
    real = bench.evaluate(boots, dataset="fashion-mnist", metrics=["coverage", "ssim"])
    fake = bench.evaluate(noise, dataset="fashion-mnist", metrics=["coverage", "ssim"])
    assert real["coverage"] > fake["coverage"] and real["ssim"] > fake["ssim"]


@requires_data("fashion-mnist")
def test_bad_inputs_are_refused_with_what_is_wrong(boots):
    with pytest.raises(SampleFileError, match="returned 3 images when asked for 10"):
        bench.evaluate(lambda n: boots[:3], dataset="fashion-mnist", n=10, metrics=["mse"])
    with pytest.raises(UnknownNameError, match="fid"):
        bench.evaluate(boots, dataset="fashion-mnist", metrics=["fidd"])
    with pytest.raises(SampleFileError, match="a callable"):
        bench.evaluate({"images": boots}, dataset="fashion-mnist", metrics=["mse"])


@requires_data("fashion-mnist")
def test_run_returns_the_records_and_writes_the_leaderboard_inside_its_results_dir(tmp_path):
    records = bench.run(
        "support-copy", dataset="fashion-mnist", profile="smoke", seeds=[0, 1], results_dir=tmp_path / "r", jobs=1
    )
    assert [(r["key"]["method"], r["key"]["seed"], r["status"]) for r in records] == [
        ("support-copy", 0, "ok"),
        ("support-copy", 1, "ok"),
    ]
    assert "support-copy" in (tmp_path / "r" / "leaderboard.md").read_text()
    again = bench.run("support-copy", dataset="fashion-mnist", profile="smoke", seeds=[0], results_dir=tmp_path / "r")
    assert again[0] == records[0]  # stored and current: not run again
    with pytest.raises(UnknownNameError, match="support-copy"):
        bench.run("support-cpy", dataset="fashion-mnist", profile="smoke", results_dir=tmp_path / "r")


def test_the_version_is_the_installed_package_s():
    from importlib.metadata import version

    assert bench.__version__ == version("fewshot-bench")


def test_plain_progress_lines_say_what_runs_and_stay_sparse():
    import io

    from bench.sdk.progress import PlainReporter, PrefixedReporter

    now = [0.0]
    stream = io.StringIO()
    reporter = PrefixedReporter(PlainReporter(stream, interval=30.0, clock=lambda: now[0]), "vae seed 1: ")
    handle = reporter.task("pretrain", 100)
    for _ in range(100):
        now[0] += 1.0  # 100 steps over 100 s: a start line, lines at 30, 60 and 90 s, an end line
        handle.advance()
    handle.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and all(line.split(" ", 1)[1].startswith("vae seed 1: pretrain") for line in lines)
    assert "30/100 (30%), 30 s, about 70 s left" in lines[1] and "ended at 100/100 after 100 s" in lines[-1]
    assert lines[0][:4].isdigit() and lines[0][19] == "Z"  # 2026-12-04T19:05:12Z


@requires_data("fashion-mnist")
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md (Python API)", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert "coverage" in printed and "higher" in printed
    assert (tmp_path / "my-results" / "leaderboard.md").is_file()
    assert len(list((tmp_path / "my-results" / "runs").rglob("seed*.json"))) == 2
