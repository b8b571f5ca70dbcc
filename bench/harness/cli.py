"""The `bench` command line: list, run, evaluate, leaderboard, check, baseline."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.sdk.profiles import PROFILES
from bench.sdk.registry import UnknownNameError
from methods import METHODS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A benchmark for few-shot image generation.")
out = Console()
err = Console(stderr=True)

USAGE_ERROR = 2


def _print_version(value: bool) -> None:
    if value:
        from bench import __version__

        print(f"bench {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """A benchmark for few-shot image generation."""


def fail(message: str, code: int = USAGE_ERROR) -> None:
    # Messages are plain text (brackets such as `.[ray]` are not Rich markup), unwrapped so paths stay whole.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn_unreadable(errors: list[str]) -> None:
    """Records the store could not read (named by file, with what is wrong): skipped, never silently."""
    for message in errors:
        err.print(f"[yellow]skipped unreadable record:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_json(data) -> None:
    """The machine-readable answer of a command (`--json`), on stdout."""
    print(json.dumps(data, indent=2, default=str))


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"{option} takes comma-separated integers like 0,1,2; got '{text}'")
    if not seeds or any(s < 0 for s in seeds):
        fail(f"{option} takes non-negative integers like 0,1,2; got '{text}'")
    return list(dict.fromkeys(seeds))


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        fail(str(UnknownNameError("profile", profile, list(PROFILES))))


def check_device(device: str) -> None:
    if not (device == "cpu" or device.startswith("cuda")):
        fail(f"--device must be cpu or cuda[:N], got '{device}'")
    if device.startswith("cuda"):
        import torch  # only asked when CUDA is: importing torch takes seconds

        if not torch.cuda.is_available():
            fail(
                f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu"
            )


@contextlib.contextmanager
def reporting():
    """The progress reporter of a long command: bars on a terminal, timestamped lines on stderr otherwise (CI, logs)."""
    from bench.sdk.progress import PlainReporter, RichReporter

    if err.is_terminal:
        with progress_bars() as bars:
            yield RichReporter(bars)
    else:
        yield PlainReporter(sys.stderr)


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
def list_entries(
    what: str = typer.Argument(..., help="methods, metrics or datasets"),
    markdown: bool = typer.Option(
        False, "--markdown", help="metrics only: print the Markdown reference (docs/metric-reference.md is this output)"
    ),
    imports: str | None = typer.Option(
        None, "--import", help="comma-separated modules to import first: they register methods or metrics"
    ),
    results_dir: Path = typer.Option(
        Path("results"), "--results-dir", help="--markdown: where the degenerate-set tables are stored"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List registered methods, metrics or datasets (installed plugins included), with where each comes from."""
    from bench.harness.plugins import PluginImportError, import_modules, parse_imports

    choices = ["methods", "metrics", "datasets"]
    if what not in choices:
        fail(str(UnknownNameError("list", what, choices)))
    try:
        import_modules(parse_imports(imports))
    except PluginImportError as exc:
        fail(str(exc))
    if markdown:
        if what != "metrics":
            fail(f"--markdown lists metrics only, not {what}")
        from bench.harness.degenerate_tables import read_tables
        from bench.harness.metric_docs import metric_reference

        try:
            tables = read_tables(results_dir)
        except ValueError as exc:
            fail(str(exc))
        sys.stdout.write(metric_reference(tables))
        return
    if as_json:
        print(json.dumps(_listing(what), indent=2))
        return
    out.print({"methods": _methods_table, "metrics": _metrics_table, "datasets": _datasets_table}[what]())


def _listing(what: str) -> list[dict]:
    """`bench list --json`: one object per entry."""
    if what == "methods":
        METHODS.load_plugins()
        return [
            {
                "name": name,
                "kind": "reference row" if cls.is_reference else "method",
                "title": cls.title,
                "reference": cls.reference,
                "version": cls.version,
                "capabilities": sorted(cls.capabilities),
                "needs_base_classes": cls.needs_base_classes,
                "needs_class_descriptions": cls.needs_class_descriptions,
                "profiles": list(cls.profiles),
                "origin": METHODS.origin(name),
            }
            for name, cls in METHODS.items()
        ]
    if what == "metrics":
        from metrics import METRICS, in_display_order

        METRICS.load_plugins()
        return [
            {
                "name": name,
                "higher_is_better": metric.higher_is_better,
                "needs": sorted(metric.needs),
                "version": metric.version,
                "definition": metric.definition,
                "reference": metric.reference,
                "roles": sorted(metric.roles),
                "origin": METRICS.origin(name),
            }
            for name in in_display_order(METRICS.names())
            for metric in [METRICS.get(name)]
        ]
    from bench.data.datasets import DATASETS

    return [
        {
            "name": name,
            "title": dataset.title,
            "image_shape": list(dataset.image_shape),
            "protocols": list(dataset.protocols),
            "classes": list(dataset.class_names) if len(dataset.class_names) <= 20 else len(dataset.class_names),
            "files_found": len(dataset.find_files()) == len(dataset.slots),
        }
        for name, dataset in DATASETS.items()
    ]


def _methods_table() -> Table:

    METHODS.load_plugins()
    table = Table("method", "kind", "capabilities", "profiles", "reference", "origin", title="Methods")
    table.columns[0].no_wrap = True
    for name, cls in METHODS.items():
        kind = "reference row" if cls.is_reference else "method"
        capabilities = ", ".join(sorted(cls.capabilities)) or "-"
        table.add_row(name, kind, capabilities, ", ".join(cls.profiles), cls.reference, METHODS.origin(name))
    return table


def _metrics_table() -> Table:
    from metrics import METRICS, in_display_order

    METRICS.load_plugins()
    table = Table("metric", "better", "needs", "version", "definition", "origin", title="Metrics")
    table.columns[0].no_wrap = True
    for name in in_display_order(METRICS.names()):
        metric = METRICS.get(name)
        better = {True: "higher ↑", False: "lower ↓", None: "diagnostic ·"}[metric.higher_is_better]
        origin = METRICS.origin(name)
        table.add_row(name, better, ", ".join(sorted(metric.needs)), metric.version, metric.definition, origin)
    return table


def _datasets_table() -> Table:
    from bench.data.datasets import DATASETS

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
        details = "\n".join(
            [
                f"{dataset.title}: {'x'.join(map(str, dataset.image_shape))} images; protocols: {', '.join(dataset.protocols)}; "
                + protocol_note,
                "classes: " + ", ".join(names),
                f"files: {files}",
                f"source: {dataset.citation}; licence: {dataset.license}",
            ]
        )
        table.add_row(name, details)
    return table


@app.command()
def run(
    methods: str = typer.Option(
        ...,
        "--methods",
        help="comma-separated method names, or 'all' (every method the dataset can run, then the reference rows)",
    ),
    dataset: str = typer.Option(..., "--dataset"),
    shots: int = typer.Option(4, "--shots", help="support images of the novel class"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated support draws, e.g. 0,1,2"),
    train_seeds: str = typer.Option(
        "0",
        "--train-seeds",
        help="comma-separated seeds of the methods' initialisation and training noise (pretraining is shared by "
        "every support draw at one training seed)",
    ),
    profile: str = typer.Option("quick", "--profile", help=" | ".join(PROFILES)),
    novel_class: str | None = typer.Option(
        None,
        "--novel-class",
        help="class index or name, or 'all' to hold out each class in turn (default: the dataset's)",
    ),
    characters: int | None = typer.Option(
        None,
        "--characters",
        help="omniglot: novel characters per run, drawn by the seed, one task each (default 20; smoke 4)",
    ),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    leaderboard: Path | None = typer.Option(
        None,
        "--leaderboard",
        help="default: leaderboard.md inside the results dir (for the default results/: beside it)",
    ),
    device: str = typer.Option("cpu", "--device", help="where methods train: cpu or cuda[:N]"),
    eval_device: str | None = typer.Option(
        None, "--eval-device", help="where features, the evaluator and model metrics run (default: --device)"
    ),
    n_samples: int | None = typer.Option(None, "--samples", help="samples to evaluate (default per profile)"),
    metric_names: str | None = typer.Option(None, "--metrics", help="comma-separated metrics (default: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rerun runs that are already stored"),
    jobs: int | None = typer.Option(
        None, "--jobs", help="runs side by side, each in its own process (default: one per core; 1 on CUDA)"
    ),
    threads: int = typer.Option(
        1, "--threads", help="threads per run (records are reproduced bit for bit at the same count)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the run records as JSON"),
    imports: str | None = typer.Option(
        None, "--import", help="comma-separated modules to import first: they register methods or metrics"
    ),
    executor: str = typer.Option(
        "local", "--executor", help="local (runs side by side on this machine) | ray (one Ray task per run)"
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="ray: the cluster's address (default: start a local instance of --jobs x --threads CPUs)",
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="i/N: run only the i-th (from 0) of N disjoint parts of the sweep (e.g. a Slurm array)"
    ),
) -> None:
    """Train, sample, evaluate and store every (method, seed, training seed); then render the leaderboard."""
    # What can be checked without torch is checked first: a typo is answered in well under a second.
    check_profile(profile)
    for name in (device, eval_device):
        if name is not None:
            check_device(name)
    support_draws, training_seeds = parse_seeds(seeds), parse_seeds(train_seeds, "--train-seeds")
    if jobs is not None and jobs < 1 or threads < 1:
        fail("--jobs and --threads must be at least 1")
    if imports is None:  # a module named by --import may register more names: those are checked after it is imported
        try:
            METHODS.check_names(methods)
        except UnknownNameError as exc:
            fail(str(exc))
    from bench.harness.api import default_leaderboard
    from bench.harness.executor import EXECUTORS, Shard, default_jobs
    from bench.harness.leaderboard import write_leaderboard
    from bench.harness.store import ResultStore

    spec = _run_spec(
        methods,
        dataset=dataset,
        shots=shots,
        seeds=support_draws,
        train_seeds=training_seeds,
        profile=profile,
        novel_class=novel_class,
        characters=characters,
        device=device,
        eval_device=eval_device,
        n_samples=n_samples,
        metrics=metric_names,
        overwrite=overwrite,
        imports=imports,
    )
    _note_left_out(methods, spec)
    if executor not in EXECUTORS:
        fail(f"unknown executor '{executor}' (valid: {', '.join(EXECUTORS)})")
    if address is not None and executor != "ray":
        fail("--address is the Ray cluster's: use it with --executor ray")
    try:
        part = Shard.parse(shard) if shard is not None else None
    except ValueError as exc:
        fail(str(exc))
    store = ResultStore(results_dir)
    jobs = jobs or default_jobs(spec.device, spec.eval_device)
    summary = _run_with_progress(spec, store, jobs, threads, executor, address, part)
    if part is not None:
        # The other parts may still be running: the leaderboard is rendered once, after the last.
        leaderboard_line = f"shard {part.index}/{part.count}: run `bench leaderboard` once every part has ended"
    else:
        try:
            written, errors = write_leaderboard(store, leaderboard or default_leaderboard(results_dir))
        except OSError as exc:
            fail(f"{storage_failure(exc)}; the records are stored: `bench leaderboard` renders it again", code=1)
        leaderboard_line = f"leaderboard written to {written}"
        warn_unreadable(errors)
    if as_json:
        print(json.dumps([o.record for o in summary], indent=2))
    else:
        _print_run_summary(summary, spec.metrics)
        out.print(f"records in {results_dir / 'runs'}; {leaderboard_line}")
    if any(o.status == "failed" for o in summary):
        raise typer.Exit(1)


def _note_left_out(methods: str, spec) -> None:
    """Say which methods `all` left out because the dataset's protocol cannot run them (`methods_that_apply`)."""
    from bench.harness.api import what_is_missing

    if methods.strip().lower() != "all":
        return
    left_out = [f"{name} ({reason})" for name in METHODS.names() if (reason := what_is_missing(name, spec.dataset))]
    if left_out:
        err.print(f"left out on {spec.dataset}: {', '.join(left_out)}", highlight=False, markup=False, soft_wrap=True)


def _run_spec(methods: str, **options):
    """The `RunSpec` of `bench run`'s options (`bench.harness.api.run_spec`), a bad one a usage error."""
    from bench.data.datasets import DataNotFoundError
    from bench.harness.api import run_spec
    from bench.harness.plugins import PluginImportError, parse_imports

    try:
        return run_spec(methods, **{**options, "imports": parse_imports(options["imports"])})
    except (UnknownNameError, ValueError, PluginImportError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)


def _run_with_progress(
    spec, store, jobs: int = 1, threads: int = 1, executor: str = "local", address=None, shard=None
) -> list:
    """`run_benchmark` with progress (bars, or lines without a terminal); failed runs are reported as they happen.
    Returns the outcomes."""
    from bench.data.datasets import DataNotFoundError
    from bench.harness.executor import run_benchmark, sweep_units
    from bench.harness.ray_executor import ExecutorUnavailable

    try:
        units = sweep_units(spec, str(store.root), threads)
        total = len(shard.select(units) if shard else units)
        with reporting() as reporter:
            where = "on Ray" if executor == "ray" else f"{jobs} side by side"
            overall = reporter.task(f"runs ({where})", total)

            def on_outcome(outcome) -> None:
                overall.advance()
                train = f" train {outcome.key.train_seed}" if outcome.key.train_seed else ""
                if outcome.status == "failed":
                    err.print(
                        f"[yellow]run failed[/] {outcome.key.method} seed {outcome.key.seed}{train}: "
                        f"{outcome.record['failure']['reason']}"
                    )
                elif not err.is_terminal:
                    seconds = (outcome.record or {}).get("timings", {}).get("total")
                    took = f" in {seconds:.0f} s" if outcome.status == "ok" and seconds else ""
                    err.print(f"{outcome.key.method} seed {outcome.key.seed}{train}: {outcome.status}{took}")

            # In plan order, whatever order the runs ended in.
            summary = run_benchmark(
                spec, store, reporter, on_outcome, jobs, threads, executor=executor, address=address, shard=shard
            )
            overall.close()
    except (DataNotFoundError, ExecutorUnavailable) as exc:
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:  # a full or read-only disk: every file is written atomically, so nothing is half-written
        fail(
            f"{storage_failure(exc)}; every record already stored is complete: run the same command again to "
            "finish the missing runs",
            code=1,
        )
    return summary


def storage_failure(exc: OSError) -> str:
    """An OS error in one line: what went wrong and on which file (`No space left on device: results/runs/...`)."""
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)


def _print_run_summary(summary, metric_list) -> None:
    """One column per method (mean over its seeds), one row per metric: the leaderboard has the spread."""
    from metrics import METRICS, in_display_order

    names = metric_list or in_display_order(METRICS.names())
    by_method: dict[str, list] = {}
    for outcome in summary:
        by_method.setdefault(outcome.key.method, []).append(outcome)
    table = Table(
        "metric",
        *[f"{method}\n({len(runs)} run{'s' * (len(runs) > 1)})" for method, runs in by_method.items()],
        title="Runs (mean over each method's runs: seeds and held-out classes)",
    )
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
    samples: Path = typer.Option(
        ...,
        "--samples",
        help=".npz (or .npy) of uint8 or [0,1] float images, or a folder of image files (png, jpg, ...)",
    ),
    dataset: str = typer.Option(..., "--dataset"),
    novel_class: str | None = typer.Option(
        None, "--class", help="class the samples should depict (default: the dataset's novel class)"
    ),
    shots: int = typer.Option(4, "--shots", help="the split whose support set memorisation is measured against"),
    seed: int = typer.Option(0, "--seed", help="the support draw of that split"),
    characters: int | None = typer.Option(
        None, "--characters", help="omniglot: novel characters drawn by --seed (default 20); samples in task order"
    ),
    key: str | None = typer.Option(None, "--key", help="array name inside the .npz"),
    metric_names: str | None = typer.Option(None, "--metrics", help="comma-separated metrics (default: all)"),
    as_json: bool = typer.Option(False, "--json"),
    imports: str | None = typer.Option(None, "--import", help="comma-separated modules to import first (metrics)"),
) -> None:
    """Score an external generator's samples against a split's evaluation reference with every applicable metric."""
    if not samples.exists():  # answered before the heavy imports below (torch alone takes seconds)
        fail(f"{samples}: no such file or folder")
    from bench.data.datasets import DataNotFoundError
    from bench.harness.api import evaluate
    from bench.harness.plugins import PluginImportError, import_modules, parse_imports
    from bench.harness.samples import SampleFileError
    from metrics import METRICS

    try:
        import_modules(parse_imports(imports))
        evaluation = evaluate(
            samples,
            dataset=dataset,
            novel_class=novel_class,
            shots=shots,
            seed=seed,
            metrics=metric_names,
            characters=characters,
            key=key,
        )
    except (UnknownNameError, ValueError, SampleFileError, PluginImportError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    result = evaluation.to_dict()
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "folder" in result:
        skipped = result["folder"]["skipped"]
        out.print(f"{result['n_samples']} images read from {samples}: {result['folder']['conversion']}")
        if skipped:
            out.print(
                f"skipped {len(skipped)} files that are not images: {', '.join(skipped[:5])}"
                + (" ..." * (len(skipped) > 5))
            )
    table = Table(
        "metric", "value", "better", "notes", title=f"{samples} vs {result['split']['split_id']} (seed {seed})"
    )
    for name, outcome in evaluation.outcomes.items():
        arrow = METRICS.get(name).arrow
        if outcome["status"] == "ok":
            table.add_row(name, f"{outcome['value']:.5g}", arrow, outcome.get("flag", ""))
        else:
            table.add_row(name, outcome["status"], arrow, outcome.get("reason") or outcome.get("error", ""))
    out.print(table)


@app.command("degenerate")
def degenerate_command(
    dataset: str = typer.Option("fashion-mnist", "--dataset"),
    novel_class: str | None = typer.Option(None, "--class", help="default: the dataset's novel class"),
    shots: int = typer.Option(4, "--shots"),
    seed: int = typer.Option(0, "--seed", help="the support draw, and the draw of the images the sets are made of"),
    n: int = typer.Option(1000, "--n", help="images per set"),
    metric_names: str | None = typer.Option(None, "--metrics", help="comma-separated metrics (default: all)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    docs: Path | None = typer.Option(
        None, "--docs", help="a Markdown file whose degenerate-set markers receive every stored table (docs/metrics.md)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score real unseen images of the novel class and six degenerate sets (one image repeated, the class mean,
    noise, another class, blanks plus one image, blurred images) with every sample metric; store the table under
    the results directory: which cases each metric orders correctly."""
    if n < 2:
        fail(f"--n must be at least 2, got {n}")
    if docs is not None and not docs.is_file():
        fail(f"--docs {docs}: no such file")
    from bench.data.datasets import DataNotFoundError
    from bench.harness.degenerate import measure
    from bench.harness.degenerate_tables import markdown, read_tables, update_docs, write_table

    try:
        with reporting() as reporter:
            table = measure(dataset, novel_class, shots, seed, n, metric_names, reporter)
        path = write_table(table, results_dir)
        if docs is not None:
            update_docs(docs, read_tables(results_dir))
    except (UnknownNameError, ValueError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json({"table": str(path), **table})
        return
    out.print(markdown(table))
    out.print(f"table written to {path}" + (f"; {docs} updated" if docs else ""))


@app.command("leaderboard")
def leaderboard_command(
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    output: Path | None = typer.Option(
        None, "--out", help="default: leaderboard.md inside the results dir (for the default results/: beside it)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Render leaderboard.md from the stored run records."""
    from bench.harness.api import default_leaderboard
    from bench.harness.leaderboard import write_leaderboard
    from bench.harness.store import ResultStore

    path, errors = write_leaderboard(ResultStore(results_dir), output or default_leaderboard(results_dir))
    warn_unreadable(errors)
    if as_json:
        print_json({"leaderboard": str(path), "unreadable_records": errors})
        return
    out.print(f"leaderboard written to {path}")


@app.command("report")
def report_command(
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    output: Path | None = typer.Option(
        None, "--out", help="directory of the pages (default: report/ in the results dir)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write the visual report: one self-contained HTML page per split and profile (headline table, sample grids
    beside the reference rows, bar charts with intervals, loss curves and latent plots) and an index."""
    from bench.harness.report import write_report
    from bench.harness.store import ResultStore

    errors: list[str] = []
    pages = write_report(ResultStore(results_dir), output or results_dir / "report", errors)
    warn_unreadable(errors)
    if as_json:
        print_json({"index": str(pages[0]), "pages": [str(p) for p in pages[1:]], "unreadable_records": errors})
        return
    out.print(f"{len(pages) - 1} pages written; open {pages[0]}")


@app.command("rescore")
def rescore_command(
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    methods: str | None = typer.Option(None, "--methods", help="comma-separated methods (default: every stored run)"),
    metric_names: str | None = typer.Option(
        None, "--metrics", help="comma-separated metrics (default: those each run holds)"
    ),
    leaderboard: Path | None = typer.Option(
        None,
        "--leaderboard",
        help="default: leaderboard.md inside the results dir (for the default results/: beside it)",
    ),
    device: str = typer.Option("cpu", "--device", help="where checkpoints are loaded for the model metrics"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score stored runs again (their samples and checkpoints) with the current evaluator and metrics; no training."""
    from bench.data.datasets import DataNotFoundError
    from bench.harness.api import default_leaderboard
    from bench.harness.leaderboard import write_leaderboard
    from bench.harness.rescore import rescore
    from bench.harness.store import ResultStore
    from metrics import METRICS

    check_device(device)
    try:
        method_list = METHODS.resolve(methods) if methods else None
        metric_list = METRICS.resolve(metric_names) if metric_names else None
    except UnknownNameError as exc:
        fail(str(exc))
    if not (results_dir / "runs").is_dir():
        fail(f"{results_dir} holds no run records (no {results_dir / 'runs'} folder)")
    store = ResultStore(results_dir)
    errors: list[str] = []
    try:
        with reporting() as reporter:
            outcomes = rescore(store, method_list, metric_list, reporter, device, errors)
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    warn_unreadable(errors)
    written, _ = write_leaderboard(store, leaderboard or default_leaderboard(results_dir))
    if as_json:
        fields = ("status", "reason", "kept", "changed")
        print(json.dumps([{"key": o.key.to_dict(), **{f: getattr(o, f) for f in fields}} for o in outcomes], indent=2))
    else:
        _print_rescore_table(outcomes)
        out.print(f"{sum(o.status == 'rescored' for o in outcomes)} runs rescored; leaderboard written to {written}")
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


@app.command("curve")
def curve_command(
    metric: str = typer.Argument(..., help="backtrack | nll | ais | training | fid"),
    methods: str = typer.Option(
        ..., "--methods", help="comma-separated methods whose stored runs are measured (fid: which are trained)"
    ),
    split_id: str = typer.Option("fashion-mnist/novel9-4shot.v1", "--split", help="split id of the stored runs"),
    profile: str = typer.Option("quick", "--profile"),
    seed: int = typer.Option(0, "--seed"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    output: Path = typer.Option(Path("results/curves/curve"), "--out", help="writes OUT.json and OUT.png"),
    tolerance: float = typer.Option(
        0.02, "--tolerance", help="distance to the longest budget's value: relative; for ais, nats per image"
    ),
    grid: str | None = typer.Option(
        None,
        "--grid",
        help="comma-separated steps (backtrack), importance samples (nll) or intermediate distributions (ais) to read",
    ),
    lr: float | None = typer.Option(None, "--lr", help="backtracking's Adam learning rate (default: the profile's)"),
    terms: str | None = typer.Option(
        None,
        "--terms",
        help="training: comma-separated logged terms to read (default: loss, d_loss, g_loss where logged)",
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="fid: the dataset to train on"),
    shots: int = typer.Option(4, "--shots", help="fid: support images"),
    every: int = typer.Option(1, "--every", help="fid: score every N-th checkpoint (and the last)"),
    samples: int = typer.Option(5000, "--samples", help="fid: samples scored at each checkpoint"),
    device: str = typer.Option("cpu", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure a scoring budget's curve (backtracking steps x restarts, NLL importance samples or AIS intermediate
    distributions) on stored runs' fitted models, and the cheapest budget within the tolerance of the longest; or (`training`) where each training
    phase of stored runs plateaued (bench/harness/convergence.py); or (`fid`) FID at the checkpoints of a fresh fit
    (bench/harness/training_fid.py)."""
    from bench.harness.budgets import CurveError, curve_files, measure
    from bench.harness.convergence import LOSS_TERMS, training_plateaus, write_training_curves
    from bench.harness.store import ResultStore, RunKey

    if metric not in ("backtrack", "nll", "ais", "training", "fid"):
        fail(f"unknown curve '{metric}' (valid: backtrack, nll, ais, training, fid)")
    check_profile(profile)
    check_device(device)
    try:
        keys = [RunKey(name, split_id, profile, seed) for name in METHODS.resolve(methods)]
    except UnknownNameError as exc:
        fail(str(exc))
    if metric == "fid":
        _fid_curve([key.method for key in keys], dataset, shots, profile, seed, every, samples, output, device, as_json)
        return
    if metric == "training":
        try:
            chosen = tuple(part.strip() for part in terms.split(",") if part.strip()) if terms else LOSS_TERMS
            plateaus = training_plateaus(ResultStore(results_dir), keys, chosen)
        except FileNotFoundError as exc:
            fail(str(exc), code=1)
        description = {"split": split_id, "profile": profile, "seed": seed}
        json_path, png_path = write_training_curves(plateaus, output, description)
        if as_json:
            print_json(json.loads(json_path.read_text()))
            return
        for method, phases in plateaus.items():
            for phase, read in phases.items():
                for term, found in read.items():
                    verdict = "plateaued" if found["plateaued"] else "still moving"
                    out.print(
                        f"{method} {phase} {term}: {verdict} at step {found['plateau_step']:,} of {found['steps']:,}"
                    )
        out.print(f"written to {json_path} and {png_path}")
        return
    try:
        points = tuple(sorted({int(part) for part in grid.split(",")})) if grid else None
    except ValueError:
        fail(f"--grid takes comma-separated whole numbers like 25,50,100; got '{grid}'")
    try:
        overrides = {"backtrack_lr": lr} if lr is not None else None
        result = measure(metric, ResultStore(results_dir), keys, output, device, tolerance, points, overrides)
    except CurveError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json(result)
        return
    for method, curve in result["curves"].items():
        out.print(f"{method}: " + ", ".join(f"{point}: {value:.4g}" for point, value in curve["values"].items()))
    out.print(f"chosen: {result['chosen']} ({result['rule']}); written to {curve_files(output)[0]} and .png")


def _fid_curve(names, dataset, shots, profile, seed, every, samples, output, device, as_json) -> None:
    from bench.data.datasets import DataNotFoundError
    from bench.harness.training_fid import TrainingCurveError, fid_over_training, write_fid_curve

    if dataset is None:
        fail("the fid curve trains afresh: name the data with --dataset (and --shots)")
    try:
        with reporting() as reporter:
            result = fid_over_training(
                names, dataset, shots, profile, seed, every, samples, device=device, reporter=reporter
            )
    except (TrainingCurveError, UnknownNameError, ValueError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    json_path, png_path = write_fid_curve(result, output)
    if as_json:
        print_json(result)
        return
    for method, curve in result["curves"].items():
        out.print(
            f"{method}: " + ", ".join(f"{step}: {value:.4g}" for step, value in zip(curve["step"], curve["value"]))
        )
    out.print(f"written to {json_path} and {png_path}")


def _print_rescore_table(outcomes) -> None:
    table = Table("split", "method", "profile", "seed", "result", "changed metrics", "notes", title="Rescore")
    for o in outcomes:
        notes = o.reason or "; ".join(f"{name}: {why}" for name, why in o.kept.items())
        key = o.key
        table.add_row(
            key.split_id, key.method, key.profile, str(key.seed), o.status, ", ".join(o.changed) or "none", notes
        )
    out.print(table)


@app.command("check")
def check_command(
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (see `bench baseline`)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    strict: bool = typer.Option(False, "--strict", help="fail on entries measured with another card or seed set too"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare stored results with a baseline; exit 1 naming every regression (and, with --strict, every entry not comparable)."""
    import dataclasses

    from rich.markup import escape

    from bench.harness.check import NOT_COMPARABLE, OK, REGRESSION, BaselineError, check, failing, summary
    from bench.harness.store import ResultStore

    unreadable: list[str] = []
    try:
        rows = check(ResultStore(results_dir), baseline, unreadable)
    except BaselineError as exc:
        fail(str(exc))
    failed = failing(rows, strict)
    if as_json:
        print_json(
            {
                "rows": [dataclasses.asdict(row) for row in rows],
                "summary": summary(rows),
                "failed": len(failed),
                "unreadable_records": unreadable,
            }
        )
        if failed or unreadable:
            raise typer.Exit(1)
        return
    colour = {OK: "green", REGRESSION: "red", NOT_COMPARABLE: "red" if strict else "yellow"}
    table = Table(
        "split", "profile", "method", "metric", "baseline", "current", "tolerance", "result", title="Regression check"
    )
    for row in rows:
        current = "missing" if row.current is None else f"{row.current:.5g}"
        verdict = "ok" if row.status == OK else f"{row.status.upper()}: {row.reason}"
        table.add_row(
            row.split_id,
            row.profile,
            row.method,
            row.metric,
            f"{row.baseline:.5g}",
            current,
            f"{row.tolerance:.3g}",
            f"[{colour.get(row.status, 'dim')}]{escape(verdict)}[/]",
        )
    out.print(table)
    for r in failed:
        err.print(
            f"{r.status}: {r.method} {r.metric} on {r.split_id} ({r.profile}): {r.reason}",
            highlight=False,
            markup=False,
        )
    for message in unreadable:
        err.print(f"unreadable record: {message}", highlight=False, markup=False, soft_wrap=True)
    out.print(summary(rows) + (f", {len(unreadable)} unreadable records" if unreadable else ""), highlight=False)
    if failed or unreadable:
        raise typer.Exit(1)


@app.command("baseline")
def baseline_command(
    output: Path = typer.Option(..., "--out", help="baseline JSON to write"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    relative: float = typer.Option(0.1, "--relative", help="default relative tolerance"),
    absolute: float = typer.Option(0.0, "--absolute", help="default absolute tolerance"),
    profile: str | None = typer.Option(None, "--profile", help="only this profile's results"),
    spread_from: Path | None = typer.Option(
        None,
        "--spread-from",
        help="results of the same sweep on another machine: per-metric tolerances from the measured spread",
    ),
    spread_note: str | None = typer.Option(
        None, "--spread-note", help="where --spread-from came from, recorded in the baseline"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write the current results' means as a baseline for `bench check`."""
    from bench.harness.check import SPREAD_SAFETY, BaselineError, make_baseline, save_baseline
    from bench.harness.store import ResultStore

    if profile is not None:
        check_profile(profile)
    if spread_from is not None and not (spread_from / "runs").is_dir():
        fail(f"--spread-from {spread_from}: no runs/ folder there (a results directory of the same sweep)")
    try:
        made = make_baseline(
            ResultStore(results_dir),
            relative,
            absolute,
            profile,
            ResultStore(spread_from) if spread_from is not None else None,
            spread_note,
        )
    except BaselineError as exc:
        fail(str(exc))
    if not made["entries"]:
        fail(f"no successful runs in {results_dir} to make a baseline from")
    save_baseline(made, output)
    if as_json:
        print_json({"baseline": str(output), "entries": len(made["entries"]), "spread": made.get("spread")})
        return
    if "spread" in made:
        table = Table(title=f"Tolerances: max(default, {SPREAD_SAFETY:g} × spread)")
        table.add_column("metric", no_wrap=True)
        for header in ("entries", "spread abs", "spread rel", "tolerance abs", "tolerance rel"):
            table.add_column(header)
        for metric, m in made["spread"]["metrics"].items():
            spread = m["spread"] or {"absolute": float("nan"), "relative": float("nan")}
            table.add_row(
                metric,
                str(m["n_entries"]),
                f"{spread['absolute']:.3g}",
                f"{spread['relative']:.3g}",
                f"{m['tolerance']['absolute']:.3g}",
                f"{m['tolerance']['relative']:.3g}",
            )
        out.print(table)
        if all(
            not m["spread"] or not (m["spread"]["absolute"] or m["spread"]["relative"])
            for m in made["spread"]["metrics"].values()
        ):
            err.print(
                f"[yellow]warning:[/] {results_dir} and {spread_from} agree exactly: the tolerances are the defaults. Was "
                "the second sweep run with other float arithmetic (another machine, or another ATEN_CPU_CAPABILITY)?"
            )
    out.print(f"{len(made['entries'])} entries written to {output}")


@app.command("export")
def export_command(
    fmt: str = typer.Option("csv", "--format", help="csv | jsonl | parquet"),
    output: Path | None = typer.Option(None, "--out", help="file to write (default: stdout; parquet needs a file)"),
    results_dir: Path = typer.Option(Path("results"), "--results-dir"),
    methods: str | None = typer.Option(None, "--methods", help="comma-separated methods to keep (default: all)"),
    metric_names: str | None = typer.Option(
        None, "--metrics", help="comma-separated metrics to keep (default: all; failed runs' rows are kept)"
    ),
    as_json: bool = typer.Option(False, "--json", help="the same as --format jsonl"),
) -> None:
    """Write the stored results as a tidy table: one row per (run, metric), for pandas."""
    fmt = "jsonl" if as_json else fmt
    from bench.harness.export import ExportError, ParquetEngineMissing, check_format, export_frame, write_frame

    try:
        check_format(fmt, output)
        if not (results_dir / "runs").is_dir():
            fail(f"{results_dir} holds no run records (no {results_dir / 'runs'} folder)")
        frame, errors = export_frame(results_dir, methods, metric_names)
    except (UnknownNameError, ExportError) as exc:
        fail(str(exc))
    warn_unreadable(errors)
    try:
        text = write_frame(frame, fmt, output)
    except ParquetEngineMissing as exc:
        fail(str(exc), code=1)
    if output is None:
        sys.stdout.write(text)
    else:
        out.print(f"{len(frame)} rows written to {output}", highlight=False)


evaluator_app = typer.Typer(
    no_args_is_help=True, help="The domain evaluators (the ruler): list the pinned weights, train a recipe."
)
app.add_typer(evaluator_app, name="evaluator")


@evaluator_app.command("list")
def evaluator_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Each dataset's evaluator: recipe, pinned sha256 and test accuracy, and where the weights file was found."""
    from bench.data.datasets import DATASETS
    from bench.features.evaluator import (
        PINNED_WEIGHTS,
        EvaluatorWeightsError,
        architecture_name,
        config_for,
        find_pinned_weights,
    )

    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        if spec.evaluator_num_classes < 2:
            continue
        row = {"dataset": name, "architecture": architecture_name(config_for(name)), "pinned": name in PINNED_WEIGHTS}
        if name in PINNED_WEIGHTS:
            pinned = PINNED_WEIGHTS[name]
            row.update(file=pinned.file, sha256=pinned.sha256, test_accuracy=pinned.test_accuracy)
            try:
                row["found_at"] = str(find_pinned_weights(name))
            except EvaluatorWeightsError as exc:
                row["problem"] = str(exc)
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("dataset", "recipe", "sha256", "test accuracy", "weights file", title="Domain evaluators")
    for row in rows:
        if not row["pinned"]:
            table.add_row(row["dataset"], row["architecture"], "-", "-", "none shipped: trained on first use")
            continue
        where = row.get("found_at") or f"[red]{row['problem']}[/]"
        table.add_row(
            row["dataset"], row["architecture"], row["sha256"][:16] + "…", f"{row['test_accuracy']:.4f}", where
        )
    out.print(table)
    if any("problem" in row for row in rows):
        raise typer.Exit(1)


@evaluator_app.command("train")
def evaluator_train(
    dataset: str = typer.Option(..., "--dataset"),
    output: Path = typer.Option(..., "--out", help="weights file to write"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train a dataset's evaluator with its pinned recipe; print the file's sha256 and the test accuracy."""
    import time

    from bench.data.datasets import DataNotFoundError
    from bench.features.evaluator import NoDomainEvaluator, save_evaluator, train_evaluator

    start = time.perf_counter()
    try:
        with reporting() as reporter:
            model, card = train_evaluator(dataset, reporter=reporter)
    except (UnknownNameError, NoDomainEvaluator) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    digest = save_evaluator(output, model, card)
    if as_json:
        seconds = round(time.perf_counter() - start, 1)
        print_json({"file": str(output), "bytes": output.stat().st_size, "sha256": digest, "seconds": seconds, **card})
        return
    print(f"{output}: {output.stat().st_size:,} bytes, sha256 {digest}")
    print(
        f"test accuracy {card['test_accuracy']:.6f}; trained in {time.perf_counter() - start:.0f} s "
        f"({card['architecture']}, recipe {card['recipe_version']}, torch {card['torch']})"
    )


@app.command("folder")
def folder_command(
    source: str = typer.Option(..., "--from", help="the dataset the images come from, e.g. cifar10"),
    class_name: str = typer.Option(..., "--class", help="its class, by index or name"),
    images: int = typer.Option(100, "--images", help="how many of the class's train images"),
    seed: int = typer.Option(0, "--seed", help="seed of the draw (numpy default_rng)"),
    out: Path = typer.Option(..., "--out", help="a new or empty folder"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write a folder of one class's train images (PNG) with a card naming their dataset, whose domain evaluator then
    measures `folder:OUT@SIZE` (the unconditional protocol of the IMLE papers, on data at hand)."""
    from bench.data.datasets import DATASETS, DataNotFoundError
    from bench.data.datasets.folder import write_folder

    try:
        card = write_folder(DATASETS.get(source), class_name, images, seed, out)
    except (UnknownNameError, ValueError, FileExistsError) as exc:
        fail(str(exc))
    except DataNotFoundError as exc:
        fail(str(exc), code=1)
    if as_json:
        print_json({"folder": str(out), **card})
        return
    size = card["source"]["size"]
    print(f"{out}: {images} images of {source} class {card['source']['class']!r}; use --dataset folder:{out}@{size}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: runs in progress were not recorded")
        sys.exit(130)


if __name__ == "__main__":
    main()
