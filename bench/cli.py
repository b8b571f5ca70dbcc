"""The `bench` command line: list, run, evaluate, leaderboard, check, baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.method import PROFILES
from bench.registry import UnknownNameError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A benchmark for few-shot image generation.")
out = Console()
err = Console(stderr=True)

USAGE_ERROR = 2


def fail(message: str, code: int = USAGE_ERROR) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--seeds takes comma-separated integers like 0,1,2; got '{text}'")
    if not seeds or any(s < 0 for s in seeds):
        fail(f"--seeds takes non-negative integers like 0,1,2; got '{text}'")
    return list(dict.fromkeys(seeds))


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        fail(str(UnknownNameError("profile", profile, list(PROFILES))))


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        fail(f"--device must be cpu or cuda[:N], got '{device}'")


def progress_bars() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


@app.command("list")
def list_entries(what: str = typer.Argument(..., help="methods, metrics or datasets")) -> None:
    """List registered methods, metrics or datasets."""
    choices = ["methods", "metrics", "datasets"]
    if what not in choices:
        fail(str(UnknownNameError("list", what, choices)))
    if what == "methods":
        from methods import METHODS

        table = Table("method", "kind", "capabilities", "profiles", "reference", title="Methods")
        table.columns[0].no_wrap = True
        for name, cls in METHODS.items():
            kind = "reference row" if cls.is_reference else "method"
            table.add_row(name, kind, ", ".join(sorted(cls.capabilities)) or "-", ", ".join(cls.profiles), cls.reference)
    elif what == "metrics":
        from metrics import METRICS, in_display_order

        table = Table("metric", "better", "needs", "version", "definition", title="Metrics")
        table.columns[0].no_wrap = True
        for name in in_display_order(METRICS.names()):
            metric = METRICS.get(name)
            better = {True: "higher ↑", False: "lower ↓", None: "diagnostic ·"}[metric.higher_is_better]
            table.add_row(name, better, ", ".join(sorted(metric.needs)), metric.version, metric.definition)
    else:
        from bench.datasets import DATASETS

        table = Table(title="Datasets", show_lines=True)
        table.add_column("dataset", no_wrap=True)
        table.add_column("details")
        for name, dataset in DATASETS.items():
            found = dataset.find_files()
            if len(found) == len(dataset.slots):
                files = "found in " + ", ".join(sorted({str(p.parent) for p in found.values()}))
            else:
                files = f"[yellow]missing {len(dataset.slots) - len(found)} of {len(dataset.slots)} arrays[/] (set BENCH_DATA_DIR, or run once online to download)"
            novel = dataset.default_novel_class
            if "novel-class" in dataset.protocols:
                protocol_note = f"default novel class {novel} ({dataset.class_names[novel]})"
            else:
                protocol_note = "novel classes drawn by the seed (see docs/protocol.md)"
            names = [f"{i} {c}" for i, c in enumerate(dataset.class_names)]
            if len(names) > 12:  # Omniglot has 1,623: show the two ends
                names = names[:5] + [f"... ({len(names)} classes) ..."] + names[-3:]
            details = "\n".join([
                f"{dataset.title}: {'x'.join(map(str, dataset.image_shape))} images; protocols: {', '.join(dataset.protocols)}; "
                + protocol_note,
                "classes: " + ", ".join(names),
                f"files: {files}",
                f"source: {dataset.citation}; licence: {dataset.license}",
            ])
            table.add_row(name, details)
    out.print(table)


@app.command()
def run(
    methods: str = typer.Option(..., "--methods", help="comma-separated method names, or 'all' (every method, then the reference rows)"),
    dataset: str = typer.Option(..., "--dataset"),
    shots: int = typer.Option(4, "--shots", help="support images of the novel class"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated support draws, e.g. 0,1,2"),
    profile: str = typer.Option("quick", "--profile", help="smoke | quick | paper"),
    novel_class: Optional[str] = typer.Option(
        None, "--novel-class", help="class index or name, or 'all' to hold out each class in turn (default: the dataset's)"
    ),
    characters: Optional[int] = typer.Option(
        None, "--characters", help="omniglot: novel characters per run, drawn by the seed, one task each (default 20)"
    ),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="default: leaderboard.md beside the results dir"),
    device: str = typer.Option("cpu", "--device"),
    n_samples: Optional[int] = typer.Option(None, "--samples", help="samples to evaluate (default per profile)"),
    metric_names: Optional[str] = typer.Option(None, "--metrics", help="comma-separated metrics (default: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rerun runs that are already stored"),
    as_json: bool = typer.Option(False, "--json", help="print the run records as JSON"),
) -> None:
    """Train, sample, evaluate and store every (method, seed); then render the leaderboard."""
    from bench.datasets import DATASETS, DataNotFoundError
    from bench.leaderboard import write_leaderboard
    from bench.runner import RunSpec, run_benchmark
    from bench.splits import DEFAULT_CHARACTERS, validate_shots
    from bench.store import ResultStore
    from methods import METHODS, method_names
    from metrics import METRICS

    check_profile(profile)
    check_device(device)
    seed_list = parse_seeds(seeds)
    try:
        # `all`: every method, then the reference rows that give the leaderboard its scale.
        method_list = METHODS.resolve(methods, method_names(references=False) + method_names(methods=False))
        dataset_name = DATASETS.get(dataset).name
        metric_list = METRICS.resolve(metric_names) if metric_names else None
        validate_shots(shots)
        novel_classes = DATASETS.get(dataset).novel_classes(novel_class)
    except (UnknownNameError, ValueError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    if n_samples is not None and n_samples < 2:
        fail("--samples must be at least 2")
    if characters is not None and characters < 1:
        fail("--characters must be at least 1")
    characters = characters or DEFAULT_CHARACTERS

    spec = RunSpec(method_list, dataset_name, shots, seed_list, profile, novel_class=novel_class, characters=characters,
                   device=device, n_samples=n_samples, metrics=metric_list, overwrite=overwrite)
    store = ResultStore(results_dir)
    leaderboard_path = leaderboard or results_dir.resolve().parent / "leaderboard.md"
    from bench.progress import RichReporter

    summary = []
    total = len(novel_classes) * len(method_list) * len(seed_list)
    try:
        with progress_bars() as progress:
            overall = progress.add_task("runs", total=total)

            def on_outcome(outcome) -> None:
                progress.advance(overall)
                summary.append(outcome)
                if outcome.status == "failed":
                    err.print(f"[yellow]run failed[/] {outcome.key.method} seed {outcome.key.seed}: {outcome.record['failure']['reason']}")

            run_benchmark(spec, store, RichReporter(progress), on_outcome)
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc))
    written, errors = write_leaderboard(store, leaderboard_path)
    for message in errors:
        err.print(f"[yellow]skipped unreadable record:[/] {message}")

    if as_json:
        print(json.dumps([o.record for o in summary], indent=2))
    else:
        _print_run_summary(summary, metric_list)
        out.print(f"records in {results_dir / 'runs'}; leaderboard written to {written}")
    if any(o.status == "failed" for o in summary):
        raise typer.Exit(1)


def _print_run_summary(summary, metric_list) -> None:
    """One column per method (mean over its seeds), one row per metric: the leaderboard has the spread."""
    from metrics import METRICS, in_display_order

    names = metric_list or in_display_order(METRICS.names())
    by_method: dict[str, list] = {}
    for outcome in summary:
        by_method.setdefault(outcome.key.method, []).append(outcome)
    table = Table("metric", *[f"{method}\n({len(runs)} run{'s' * (len(runs) > 1)})" for method, runs in by_method.items()],
                  title="Runs (mean over each method's runs: seeds and held-out classes)")
    table.columns[0].no_wrap = True

    def status(runs) -> str:
        counts: dict[str, int] = {}
        for outcome in runs:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return ", ".join(f"{n} {state}" for state, n in counts.items())

    def cell(runs, name: str) -> str:
        results = [(o.record or {}).get("metrics", {}).get(name, {}) for o in runs if o.status != "failed"]
        values = [r["value"] for r in results if r.get("status") == "ok"]
        if values:
            return f"{sum(values) / len(values):.4g}"
        states = {r.get("status", "-") for r in results} or {"-"}
        return ", ".join(sorted({"not_applicable": "n/a"}.get(state, state) for state in states))

    table.add_row("runs", *[status(runs) for runs in by_method.values()], end_section=True)
    for name in names:
        table.add_row(f"{name} {METRICS.get(name).arrow}", *[cell(runs, name) for runs in by_method.values()])
    fit_means = []
    for runs in by_method.values():
        fits = [(o.record or {}).get("timings", {}).get("fit") for o in runs if o.status != "failed"]
        fits = [fit for fit in fits if fit is not None]
        fit_means.append(f"{sum(fits) / len(fits):.1f}" if fits else "-")
    table.add_row("fit seconds", *fit_means)
    out.print(table)


@app.command("evaluate")
def evaluate_samples(
    samples: Path = typer.Option(..., "--samples", help=".npz (or .npy) of uint8 or [0,1] float images"),
    dataset: str = typer.Option(..., "--dataset"),
    novel_class: Optional[str] = typer.Option(None, "--class", help="class the samples should depict (default: the dataset's novel class)"),
    shots: int = typer.Option(4, "--shots", help="the split whose support set memorisation is measured against"),
    seed: int = typer.Option(0, "--seed", help="the support draw of that split"),
    key: Optional[str] = typer.Option(None, "--key", help="array name inside the .npz"),
    metric_names: Optional[str] = typer.Option(None, "--metrics", help="comma-separated metrics (default: all)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score an external generator's samples against a split's evaluation reference with every applicable metric."""
    from bench.datasets import DATASETS, DataNotFoundError
    from bench.evaluation import evaluate
    from bench.runner import derive_seed
    from bench.samples import SampleFileError, load_samples
    from bench.splits import make_split
    from metrics import METRICS

    try:
        spec = DATASETS.get(dataset)
        metric_list = METRICS.resolve(metric_names) if metric_names else None
        images = load_samples(samples, spec.image_shape, key)
        split = make_split(spec.name, shots, seed, novel_class)
    except (UnknownNameError, ValueError, SampleFileError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    outcomes, timings = evaluate(
        images,
        reference=split.reference,
        support=split.task.support,
        dataset=split.info.dataset,
        novel_class=split.info.novel_class,
        metric_names=metric_list,
        # The evaluation seed `bench run` uses for this support draw, so rescoring a stored sample file reproduces it.
        seed=derive_seed(seed, "evaluate"),
    )
    result = {
        "samples": str(samples),
        "n_samples": int(images.shape[0]),
        "split": {k: v for k, v in split.info.to_dict().items() if k != "data_provenance"},
        "metrics": outcomes,
        "timings": timings,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("metric", "value", "better", "notes", title=f"{samples} vs {split.info.split_id} (seed {seed})")
    for name, outcome in outcomes.items():
        arrow = METRICS.get(name).arrow
        if outcome["status"] == "ok":
            table.add_row(name, f"{outcome['value']:.5g}", arrow, outcome.get("flag", ""))
        else:
            table.add_row(name, outcome["status"], arrow, outcome.get("reason") or outcome.get("error", ""))
    out.print(table)


@app.command("leaderboard")
def leaderboard_command(
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    output: Optional[Path] = typer.Option(None, "--out", help="default: leaderboard.md beside the results dir"),
) -> None:
    """Render leaderboard.md from the stored run records."""
    from bench.leaderboard import write_leaderboard
    from bench.store import ResultStore

    path, errors = write_leaderboard(ResultStore(results_dir), output or results_dir.resolve().parent / "leaderboard.md")
    for message in errors:
        err.print(f"[yellow]skipped unreadable record:[/] {message}")
    out.print(f"leaderboard written to {path}")


@app.command("check")
def check_command(
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (see `bench baseline`)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
) -> None:
    """Compare stored results with a baseline; exit 1 naming every regression."""
    from bench.check import BaselineError, check
    from bench.store import ResultStore

    try:
        rows = check(ResultStore(results_dir), baseline)
    except BaselineError as exc:
        fail(str(exc))
    table = Table("split", "profile", "method", "metric", "baseline", "current", "tolerance", "result", title="Regression check")
    for row in rows:
        current = "missing" if row.current is None else f"{row.current:.5g}"
        verdict = f"[red]REGRESSION: {row.reason}[/]" if row.regressed else "[green]ok[/]"
        table.add_row(row.split_id, row.profile, row.method, row.metric, f"{row.baseline:.5g}", current, f"{row.tolerance:.3g}", verdict)
    out.print(table)
    regressions = [r for r in rows if r.regressed]
    if regressions:
        for r in regressions:
            err.print(f"regression: {r.method} {r.metric} on {r.split_id} ({r.profile}): {r.reason}", highlight=False)
        raise typer.Exit(1)
    out.print(f"{len(rows)} baseline entries checked, no regression")


@app.command("baseline")
def baseline_command(
    output: Path = typer.Option(..., "--out", help="baseline JSON to write"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    relative: float = typer.Option(0.1, "--relative", help="default relative tolerance"),
    absolute: float = typer.Option(0.0, "--absolute", help="default absolute tolerance"),
    profile: Optional[str] = typer.Option(None, "--profile", help="only this profile's results"),
) -> None:
    """Write the current results' means as a baseline for `bench check`."""
    from bench.check import write_baseline
    from bench.store import ResultStore

    if profile is not None:
        check_profile(profile)
    count = write_baseline(ResultStore(results_dir), output, relative, absolute, profile)
    if count == 0:
        fail(f"no successful runs in {results_dir} to make a baseline from")
    out.print(f"{count} entries written to {output}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: runs in progress were not recorded")
        sys.exit(130)
