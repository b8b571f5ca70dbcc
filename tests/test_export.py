import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.harness.cli import app
from bench.harness.export import COLUMNS, export_frame
from bench.harness.leaderboard import card_fingerprint
from bench.harness.store import ResultStore, RunKey

SPLIT = "fashion-mnist/novel9-4shot.v1"
CODE = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
KID_CARD = {"implementation": "torch-fidelity 0.4.0", "kid_subsets": 100, "n_samples": 1000, "evaluation_seed": 7}
MSE_CARD = {"implementation": "nearest reference image", "n_samples": 1000}
NA_CARD = {"implementation": "nearest support image", "n_samples": 1000}
# Read the text formats back with these columns as strings: a fingerprint can look like a number.
AS_TEXT = {"card_fingerprint": str, "code": str}

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok_record():
    return {
        "schema": 1,
        "key": {"method": "vae", "split_id": SPLIT, "profile": "quick", "seed": 0},
        "status": "ok",
        "method": {"name": "vae", "is_reference": False},
        "split": {"dataset": "fashion-mnist"},
        "code": CODE,
        "created_at": "2026-01-02T03:04:05+00:00",
        "metrics": {
            "kid": {"status": "ok", "value": 0.012345678901234567, "std": 0.0018765432109876543, "card": KID_CARD},
            "mse": {"status": "ok", "value": 0.6021303534507751, "card": MSE_CARD},
            "support_nn_mse": {"status": "not_applicable", "reason": "no support images were given", "card": NA_CARD},
        },
    }


def failed_record():
    return {
        "schema": 1,
        "key": {"method": "dcgan", "split_id": SPLIT, "profile": "quick", "seed": 1},
        "status": "failed",
        "method": {"name": "dcgan", "is_reference": False},
        "split": {"dataset": "fashion-mnist"},
        "code": CODE,
        "created_at": "2026-01-02T04:05:06+00:00",
        "failure": {"type": "TrainingDiverged", "reason": "loss diverged at step 12", "diverged": True},
    }


@pytest.fixture
def store(tmp_path):
    s = ResultStore(tmp_path / "results")
    s.write(ok_record())
    s.write(failed_record())
    return s


def _check_rows(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 4  # three outcomes of the ok run, one row for the failed run
    rows = {(r.method, r.metric if isinstance(r.metric, str) else None): r for r in frame.itertuples()}
    kid = rows[("vae", "kid")]
    record = ok_record()
    assert kid.value == record["metrics"]["kid"]["value"]
    assert kid.std == record["metrics"]["kid"]["std"]
    assert kid.status == "ok" and kid.dataset == "fashion-mnist" and kid.split_id == SPLIT
    assert kid.profile == "quick" and kid.seed == 0 and not kid.is_reference
    assert kid.card_fingerprint == card_fingerprint(KID_CARD)
    assert kid.code == CODE["commit"] and pd.Timestamp(kid.created_at) == pd.Timestamp(record["created_at"])
    mse = rows[("vae", "mse")]
    assert mse.value == record["metrics"]["mse"]["value"]
    assert pd.isna(mse.std) and mse.card_fingerprint == card_fingerprint(MSE_CARD)
    na = rows[("vae", "support_nn_mse")]
    assert na.status == "not_applicable" and na.reason == "no support images were given" and pd.isna(na.value)
    assert na.card_fingerprint == card_fingerprint(NA_CARD)
    failed = rows[("dcgan", None)]
    assert failed.status == "failed" and failed.reason == "loss diverged at step 12" and failed.seed == 1
    assert pd.isna(failed.value) and pd.isna(failed.card_fingerprint)


def test_export_frame_has_one_row_per_run_and_metric(store):
    frame, errors = export_frame(store)
    assert not errors
    _check_rows(frame)
    # The frame holds the records' values exactly.
    values = frame.set_index("metric")["value"]
    assert values["kid"] == ok_record()["metrics"]["kid"]["value"]
    assert values["mse"] == ok_record()["metrics"]["mse"]["value"]


def test_csv_export_reads_back_with_pandas(store, tmp_path):
    path = tmp_path / "scores.csv"
    result = invoke("export", "--format", "csv", "--out", path, "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(path, dtype=AS_TEXT)
    _check_rows(frame)
    values = frame.set_index("metric")["value"]
    assert values["kid"] == ok_record()["metrics"]["kid"]["value"]  # csv keeps every digit
    assert values["mse"] == ok_record()["metrics"]["mse"]["value"]


def test_csv_and_jsonl_go_to_stdout_without_out(store):
    result = invoke("export", "--format", "csv", "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    _check_rows(pd.read_csv(io.StringIO(result.stdout), dtype=AS_TEXT))
    result = invoke("export", "--format", "jsonl", "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line).keys() == set(COLUMNS) for line in lines)


def test_jsonl_export_reads_back_with_pandas(store, tmp_path):
    path = tmp_path / "scores.jsonl"
    result = invoke("export", "--format", "jsonl", "--out", path, "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    _check_rows(pd.read_json(path, lines=True, dtype=AS_TEXT, precise_float=True))


def test_filters_keep_the_named_methods_and_metrics(store):
    frame, _ = export_frame(store, methods="vae")
    assert set(frame["method"]) == {"vae"} and len(frame) == 3
    frame, _ = export_frame(store, metrics=["kid"])
    assert len(frame) == 2  # kid, and the failed run's row
    assert frame["metric"].isna().sum() == 1 and set(frame["metric"].dropna()) == {"kid"}
    result = invoke("export", "--results-dir", store.root, "--methods", "dcgan", "--metrics", "kid")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame["method"]) == ["dcgan"] and list(frame["status"]) == ["failed"]


def test_a_truncated_record_is_reported_and_skipped(store):
    good = store.record_path(RunKey("vae", SPLIT, "quick", 0)).read_text()
    truncated = store.record_path(RunKey("vae", SPLIT, "quick", 2))
    truncated.write_text(good[: len(good) // 2])  # a record cut off mid-write
    frame, errors = export_frame(store)
    assert len(frame) == 4 and len(errors) == 1 and str(truncated) in errors[0]
    result = invoke("export", "--format", "csv", "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    assert "skipped unreadable record" in result.stderr and str(truncated) in result.stderr
    _check_rows(pd.read_csv(io.StringIO(result.stdout), dtype=AS_TEXT))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--format", "xlsx"], "Valid formats: csv, jsonl, parquet"),
        (["--format", "parquet"], "--out"),
        (["--methods", "dcgn"], "Did you mean 'dcgan'?"),
        (["--metrics", "kdi"], "Did you mean 'kid'?"),
    ],
)
def test_usage_errors_exit_2(store, args, expected):
    result = invoke("export", "--results-dir", store.root, *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and not result.stdout


def test_a_missing_results_dir_is_a_usage_error(tmp_path):
    result = invoke("export", "--results-dir", tmp_path / "nowhere")
    assert result.exit_code == 2 and "holds no run records" in result.output


def test_parquet_without_pyarrow_says_how_to_install_it(store, tmp_path, monkeypatch):
    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', 'fastparquet'.")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_engine)
    path = tmp_path / "scores.parquet"
    result = invoke("export", "--format", "parquet", "--out", path, "--results-dir", store.root)
    assert result.exit_code == 1, result.output
    assert "pip install pyarrow" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not path.exists()


def test_parquet_export_reads_back_with_pandas(store, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "scores.parquet"
    result = invoke("export", "--format", "parquet", "--out", path, "--results-dir", store.root)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(path)
    _check_rows(frame)
    assert frame.set_index("metric")["value"]["kid"] == ok_record()["metrics"]["kid"]["value"]
