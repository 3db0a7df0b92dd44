"""Everything the command line prints as tables: a run, the gate, a sweep, the registry, the preflight."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from flows.compress import RunReport
    from flows.sweep import SweepReport
    from tasks.stages.edgetpu import CompilerReport, Preflight

# Piped output has no width of its own: wide enough for any table here, so that nothing is cut.
PIPED_WIDTH = 1000


def console() -> Console:
    """Where every table is printed: in a terminal, its width; piped, as wide as the tables need.

    rich assumes 80 columns when stdout is not a terminal, and cuts a wider table's cells to fit
    (the sweep's settings, the gate's notes). `COLUMNS` still decides when it is set.
    """
    from rich.console import Console

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPED_WIDTH)


def table(title: str, columns: Iterable[str], right: Iterable[str] = ()) -> Table:
    """A rich table whose cells wrap, folding long words, when the terminal is narrower than the table."""
    from rich.table import Table

    aligned = set(right)
    result = Table(title=title)
    for column in columns:
        result.add_column(column, justify="right" if column in aligned else "left", overflow="fold")
    return result


def print_report(report: RunReport, process_started: float, finished: float) -> None:
    """A run: every variant, where the time went, the Edge TPU mapping, the gate, the registry."""
    out = console()
    if report.skipped or report.gate is None:
        assert report.version is not None  # a skipped run stands for a registered version
        recorded = "" if report.recorded else "; not recorded in Prefect (no server configured)"
        out.print(
            f"nothing changed: every stage is up to date and no setting changed since MLflow run {report.run_id}, "
            f"which registered version {report.version.version}; it stands ({finished - process_started:.1f} s"
            f"{recorded})"
        )
        return
    out.print(variants_table(report.metrics["evaluate"]))

    timing = table("where the time went", ("step", "status", "seconds"), right=("seconds",))
    in_stages = 0.0
    for outcome in report.stages:
        timing.add_row(outcome.name, "ran" if outcome.ran else "skipped", f"{outcome.seconds:.1f}")
        in_stages += outcome.seconds
    tracking = report.seconds.get("tracking", 0.0)
    startup = report.started_at - process_started
    orchestration = (finished - report.started_at) - in_stages - tracking
    timing.add_row("tracking (MLflow)", "", f"{tracking:.1f}")
    timing.add_row("orchestration (Prefect, DVC)", "", f"{max(orchestration, 0.0):.1f}")
    timing.add_row("start-up (imports, Prefect server)", "", f"{startup:.1f}")
    timing.add_row("total", "", f"{finished - process_started:.1f}", style="bold")
    out.print(timing)
    tpu = report.metrics["edgetpu"]
    out.print(
        f"Edge TPU: {tpu['mapped_fraction']:.0%} of operators mapped, {tpu['subgraphs']} subgraph(s) ({tpu['note']})"
    )
    memory = tpu.get("memory")
    if memory and memory.get("on_chip_bytes") is not None:
        from tasks.stages.edgetpu import format_size

        out.print(
            f"Edge TPU parameters: {format_size(memory['on_chip_bytes'])} on chip, "
            f"{format_size(memory['off_chip_bytes'] or 0)} streamed ({memory['source']})"
        )
    print_gate(report.gate.to_dict())
    out.print(f"MLflow run {report.run_id} in {report.tracking_uri}")
    if report.version is not None:
        verb = "registered" if report.version.new else "already registered (same model) as"
        out.print(f"{verb} version {report.version.version}, now 'candidate'")
    if report.promoted is not None:
        out.print(report.promoted.message)


def variants_table(evaluation: dict[str, Any]) -> Table:
    """Every variant's accuracy, what the device holds and computes, and the download (file, gzipped).

    `evaluation` is metrics.json's variants (as the run's metrics hold them). Parameter bytes are the
    dense bytes the device holds (float32 for the Keras models, as stored for each .tflite); the
    gzipped size is the download, which pruning's zeros and clustering's repeats shrink.
    """
    columns = ("variant", "accuracy", "parameter bytes", "MACs", "file bytes", "gzip bytes")
    variants = table("variants (test split)", columns, right=columns[1:])
    for name in ("float", "pruned", "clustered", "float_tflite", evaluation["shipped"]):
        if name not in evaluation:
            continue  # clustered: only when cluster.enabled
        values = evaluation[name]
        variants.add_row(
            name,
            f"{values['accuracy']:.4f}",
            _num(values.get("param_bytes"), ",.0f"),
            _num(values.get("macs"), ",.0f"),
            f"{values['size_bytes']:,}",
            f"{values['gzip_bytes']:,}",
        )
    return variants


def print_variants(metrics: dict[str, Any]) -> None:
    """The variants of metrics.json (data/reports) as the run's report shows them, the shipped one last.

    What a failed gate prints above its checks, so that the numbers it judged are on the screen.
    """
    console().print(variants_table({**metrics["variants"], "shipped": metrics["shipped"]}))


def print_gate(gate: dict[str, Any]) -> None:
    """Every check of a gate result (gate.json's form): observed, threshold, verdict, note."""
    checks = table(f"gate: {gate['verdict']}", ("check", "observed", "threshold", "verdict", "note"))
    for check in gate["checks"]:
        observed = "-" if check["observed"] is None else f"{check['observed']:.6g}"
        threshold = "-" if check["threshold"] is None else f"{check['comparison']} {check['threshold']:.6g}"
        style = {"fail": "red", "pass": "green"}.get(check["verdict"], "dim")
        checks.add_row(check["name"], observed, threshold, check["verdict"], check["note"], style=style)
    console().print(checks)


def print_sweep(report: SweepReport, root: Path) -> None:
    """The trials as the device pays for them, the float models, where the answer went, the best trial."""

    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    out = console()
    columns = ("trial", "settings", "accuracy", "param bytes", "MACs", "off-chip B", "TPU", "ms", "gzip bytes")
    trials = table("sweep (test split; the shipped int8 model of each trial)", (*columns, "verdict"), right=columns[2:])
    for outcome in report.outcomes:
        if outcome.status != "ok":
            trials.add_row(outcome.trial.name, outcome.trial.settings, "failed", *[""] * 6, outcome.error[:60])
            continue
        m = outcome.metrics
        trials.add_row(
            ("* " if outcome.best else "") + outcome.trial.name,
            outcome.trial.settings + (f" (= {outcome.same_as}, not run again)" if outcome.same_as else ""),
            f"{m['accuracy']:.4f}",
            number(m.get("param_bytes"), ","),
            number(m.get("macs"), ","),
            number(m.get("off_chip_bytes"), ","),
            number(m.get("mapped_fraction"), ".0%"),
            number(m.get("latency_ms"), ".3f"),
            number(m.get("gzip_bytes"), ","),
            outcome.verdict,
        )
    out.print(trials)
    out.print("ms: 1 thread, batch 1, the slower of XNNPACK and the built-in kernels (sweep.csv has both)")
    if report.floats:
        made = ", ".join(f"{f.spec.key[:8]} {f.status} ({f.spec.settings})" for f in report.floats)
        out.print(f"float models: {made}")
    if report.study:
        out.print(report.study)
    out.print(f"table: {report.csv.relative_to(root)}; Pareto fronts: {report.plot.relative_to(root)}")
    out.print(f"MLflow run {report.run_id} (a nested run per trial of this sweep)")
    rule = f"most accurate that passes the gate and meets every constraint ({report.constraints.describe()})"
    if report.best is None:
        out.print(
            f"no trial is best: none passes the gate and meets every constraint ({report.constraints.describe()})"
        )
    elif report.applied:
        out.print(
            f"best ({rule}): {report.best.trial.name}; written into params.yaml "
            f"({report.best.trial.settings}) - `edgecompress run` builds and registers it through the gate"
        )
    else:
        out.print(f"best ({rule}): {report.best.trial.name} ({report.best.trial.settings}); --apply writes it")
    failed = [o for o in report.outcomes if o.status != "ok"]
    if failed:
        out.print(f"{len(failed)} trial(s) failed: " + "; ".join(f"{o.trial.name}: {o.error}" for o in failed))


def two_columns(title: str, columns: tuple[str, str], rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column rich table."""
    pairs = table(title, columns)
    for key, value in rows:
        pairs.add_row(key, str(value))
    return pairs


def print_lineage(name: str, record: dict[str, Any]) -> None:
    """How a version was made: run, code, data hashes, gate, metrics, params."""
    out = console()
    aliases = ", ".join(record["aliases"]) or "no alias"
    out.print(f"[bold]{name} version {record['version']}[/bold] ({aliases})  run {record['run_id']}")
    dirty = " (uncommitted changes)" if record["code"]["dirty"] == "true" else ""
    out.print(f"code: git {record['code']['commit']}{dirty}")
    out.print(two_columns("data (DVC hashes recorded in the run's dvc.lock)", ("path", "md5"), record["data"].items()))
    if record["gate"]:
        print_gate(record["gate"])
    headline = ("evaluate.", "prune.sparsity", "prune.totals.")  # prune.totals: what pruning took off the device
    shown = {k: f"{v:.6g}" for k, v in record["metrics"].items() if k.startswith(headline)}
    out.print(two_columns("metrics", ("metric", "value"), shown.items()))
    out.print(two_columns("params", ("param", "value"), record["params"].items()))


def print_history(name: str, rows: list[dict[str, Any]]) -> None:
    """One row per registered version: aliases, gate verdict, key metrics, commit."""
    versions = table(
        f"{name} versions", ("version", "aliases", "gate", "int8 acc", "float acc", "int8 bytes", "sparsity", "commit")
    )
    for row in rows:
        versions.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            row["gate"],
            _num(row["int8_accuracy"], ".4f"),
            _num(row["float_accuracy"], ".4f"),
            _num(row["int8_size_bytes"], ",.0f"),
            _num(row["sparsity"], ".3f"),
            row["git_commit"],
        )
    console().print(versions)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_diff(result: dict[str, Any]) -> None:
    """What differs between two versions, section by section."""
    out = console()
    va, vb = result["versions"]
    columns = ("", f"v{va}", f"v{vb}", f"v{vb} / v{va}")
    shipped = table(f"shipped model: version {va} vs {vb}", columns, right=columns[1:])
    labels = {
        "accuracy": "accuracy (test split)",
        "param_bytes": "parameter bytes (held by the device)",
        "macs": "multiply-accumulates per image",
        "gzip_bytes": "gzip bytes (the download)",
        "size_bytes": "file bytes",
    }
    for figure, (left, right) in result.get("shipped", {}).items():
        spec = ".4f" if figure == "accuracy" else ",.0f"
        ratio = "-" if not left or right is None else f"{right / left:.3f}"
        shipped.add_row(labels.get(figure, figure), _num(left, spec), _num(right, spec), ratio)
    if result.get("shipped"):
        out.print(shipped)
    for section in ("params", "metrics", "data", "code"):
        differences = table(f"{section}: version {va} vs {vb}", ("key", f"v{va}", f"v{vb}"))
        for key, (left, right) in result[section].items():
            differences.add_row(key, str(left), str(right))
        if result[section]:
            out.print(differences)
        else:
            out.print(f"{section}: no difference")


def print_preflight(model: Path, predicted: Preflight, compiled: CompilerReport | None, found: bool) -> None:
    """The preflight's operator table and verdict, and the compiler's own table when it ran."""
    typer.echo(f"Edge TPU preflight (offline prediction) for {model}\n")
    typer.echo(predicted.table())
    mapped = f"{predicted.mapped}/{predicted.total} operators on the Edge TPU ({predicted.mapped_fraction:.0%})"
    typer.echo(f"\n{mapped}, {predicted.subgraphs} Edge TPU subgraph(s)")
    if predicted.uncertain:
        typer.echo(
            f"{predicted.uncertain} more not documented: may fall back (counted off the Edge TPU; "
            f"at most {predicted.mapped_fraction_max:.0%} if they map)"
        )
    if predicted.explanation is not None:
        typer.echo("\n" + "\n".join(predicted.explanation.lines()))
    if predicted.error:
        typer.echo(f"verdict: {predicted.error}")
    for warning in predicted.warnings:
        typer.echo(f"warning: {warning}")
    if predicted.memory is not None:
        lines = predicted.memory.lines()
        typer.echo('\nParameter memory (predicted offline; docs/ARCHITECTURE.md, "Edge TPU parameter memory"):')
        typer.echo("\n".join(f"{line}  (predicted)" for line in lines[:3]))
        typer.echo("\n".join(lines[3:]))
    if compiled is not None:
        typer.echo(f"\nedgetpu_compiler {compiled.version}\n")
        typer.echo(compiled.table())
        if compiled.on_chip_bytes is not None:
            typer.echo("\n".join(compiler_memory_lines(compiled)))
    elif not found:
        typer.echo("\nedgetpu_compiler not found: this is the preflight's prediction only")


def compiler_memory_lines(compiled: CompilerReport) -> list[str]:
    """The compiler's own memory lines, as it printed them."""
    from tasks.stages.edgetpu import format_size

    figures = [
        ("On-chip memory used for caching model parameters", compiled.on_chip_bytes),
        ("On-chip memory remaining for caching model parameters", compiled.on_chip_remaining_bytes),
        ("Off-chip memory used for streaming uncached model parameters", compiled.off_chip_bytes),
    ]
    return [f"{label}: {format_size(value)}" for label, value in figures if value is not None]
