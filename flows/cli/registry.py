"""`edgecompress promote | rollback | lineage | history | diff | checkout | reproduce`: the registry's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import JsonOption, ProjectOption, app, checked, fail
from flows.cli.tables import print_diff, print_history, print_lineage

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Registered model (default: registry.model_name in params.yaml).")
]
RefArgument = Annotated[str, typer.Argument(help="MODEL@ALIAS, MODEL@VERSION, or just ALIAS / VERSION.")]


def _target(project: Path, model: str | None) -> tuple[str, str]:
    """(tracking URI, model name) for a registry command, or one line saying why there is none."""
    from tasks import registry

    return checked(lambda: registry.target(project.resolve(), model))


def _resolve(project: Path, ref: str) -> tuple[str, str, str]:
    """(tracking URI, model name, version or alias) of a MODEL@REF or REF argument."""
    from tasks import registry

    uri, default = _target(project, ref.rpartition("@")[0] or None)
    name, which = registry.parse_ref(ref, default)
    return uri, name, which


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version to promote (default: candidate).")
    ] = None,
    model: ModelOption = None,
    project: ProjectOption = Path("."),
) -> None:
    """Move the `champion` alias to a gated version; the old champion becomes `previous-champion`."""
    from tasks import registry

    uri, name = _target(project, model)
    typer.echo(checked(lambda: registry.promote(uri, name, version)).message)


@app.command()
def rollback(model: ModelOption = None, project: ProjectOption = Path(".")) -> None:
    """Move `champion` back to `previous-champion` (a second rollback undoes the first)."""
    from tasks import registry

    uri, name = _target(project, model)
    typer.echo(checked(lambda: registry.rollback(uri, name)).message)


@app.command()
def lineage(ref: RefArgument = "champion", as_json: JsonOption = False, project: ProjectOption = Path(".")) -> None:
    """Show how a model version was made: run, params, metrics, gate checks, data hashes, code."""
    from tasks import registry

    uri, name, which = _resolve(project, ref)
    record = checked(lambda: registry.lineage(uri, name, which))
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    print_lineage(name, record)


@app.command()
def history(model: ModelOption = None, as_json: JsonOption = False, project: ProjectOption = Path(".")) -> None:
    """List the registered versions with their gate verdict, key metrics and aliases."""
    from tasks import registry

    uri, name = _target(project, model)
    rows = checked(lambda: registry.history(uri, name))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_history(name, rows)


@app.command()
def diff(
    first: Annotated[str, typer.Argument(help="A version or alias (MODEL@ allowed).")],
    second: Annotated[str, typer.Argument(help="Another version or alias.")],
    as_json: JsonOption = False,
    project: ProjectOption = Path("."),
) -> None:
    """Show what differs between two versions: params, metrics, data hashes and code."""
    from tasks import registry

    uri, name, a = _resolve(project, first)
    _, b = registry.parse_ref(second, name)
    result = checked(lambda: registry.diff(uri, name, a, b))
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    print_diff(result)


@app.command()
def checkout(
    ref: RefArgument,
    into: Annotated[Path | None, typer.Option(help="Folder to restore into (default: ./checkout-v<VERSION>).")] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Restore the data/ outputs a model version was made from, into a separate folder."""
    from tasks.registry.reproduce import checkout as restore
    from tasks.registry.reproduce import new_folder

    if into is not None:
        checked(lambda: new_folder(into))
    uri, name, which = _resolve(project, ref)
    version, target, restored = checked(lambda: restore(project.resolve(), uri, name, which, into))
    typer.echo(f"restored {name} version {version}'s outputs into {target}:")
    for path in restored:
        typer.echo(f"  {path}")


@app.command()
def reproduce(
    ref: RefArgument = "champion",
    into: Annotated[
        Path | None, typer.Option(help="Rebuild in this new folder and keep it (default: a temporary one).")
    ] = None,
    project: ProjectOption = Path("."),
) -> None:
    """Rebuild a registered version from its lineage in a separate folder; say whether the same model came out."""
    import tempfile

    from tasks import registry
    from tasks.registry.reproduce import reproduce as rebuild

    uri, name, which = _resolve(project, ref)
    build = checked(lambda: registry.recorded_build(uri, name, which))
    folder = into.resolve() if into else Path(tempfile.mkdtemp(prefix=f"edgecompress-v{build.version}-"))
    typer.echo(f"rebuilding {name} version {build.version} from commit {build.commit[:12]} in {folder}")
    verdict = checked(lambda: rebuild(project.resolve(), build, folder, progress=typer.echo, keep=into is not None))
    if verdict.identical:
        typer.echo(f"identical: {verdict.shipped} md5 {verdict.rebuilt_md5} is version {build.version}'s")
        return
    for difference in verdict.differences:
        typer.echo(f"  {difference}")
    fail(
        f"not reproduced: {verdict.shipped} md5 {verdict.rebuilt_md5}, version {build.version} has "
        f"{verdict.recorded_md5}; {verdict.differences[0]}"
    )
