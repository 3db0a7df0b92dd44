"""The house: no import cycle among the project's modules, the domain free of the orchestrator, small flows."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("tasks", "flows", "benchmarks")
# A command module past this many lines is doing more than parse, call and print.
FLOWS_MAX_LINES = 450
# The layers, lowest first (docs/ARCHITECTURE.md, "Layers"): a module imports only from its own
# layer or those before it. The top-level modules of tasks/ (params, layout, fsutil, errors) are
# the foundation every layer may use.
LAYERS = ("tasks", "tasks.stages", "tasks.bookkeeping", "tasks.registry", "tasks.search", "flows", "benchmarks")


def modules() -> dict[str, Path]:
    """Every module of the project's packages by its dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imported(path: Path) -> set[str]:
    """Every module name an import statement in the file names, lazy and TYPE_CHECKING imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (`from package import module` names the module)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        names = imported(path)
        targets = set()
        for target in names:
            if target.split(".")[0] not in PACKAGES:
                continue
            # `from a.b import c` lists both a.b and a.b.c: when c is a module, the dependency is c alone.
            if any(other.startswith(f"{target}.") and other in known for other in names):
                continue
            resolved = resolve(target)
            if resolved and resolved != name:
                targets.add(resolved)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_projects_modules() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def layer(module: str) -> int:
    """The index in LAYERS of the deepest layer the module belongs to."""
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(f"{prefix}."))


def test_each_layer_imports_only_the_layers_below_it() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert upward == []


def test_the_domain_imports_neither_flows_nor_prefect_nor_benchmarks() -> None:
    offending = {
        str(path.relative_to(REPO)): sorted(
            name for name in imported(path) if name.split(".")[0] in ("flows", "prefect", "prefect_dask", "benchmarks")
        )
        for path in (REPO / "tasks").rglob("*.py")
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_no_module_under_flows_is_a_second_application() -> None:
    long = {
        str(path.relative_to(REPO)): lines
        for path in (REPO / "flows").rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > FLOWS_MAX_LINES
    }
    assert long == {}


def test_every_package_says_in_its_first_line_what_lives_there() -> None:
    silent = [
        str(init.relative_to(REPO))
        for package in PACKAGES
        for init in (REPO / package).rglob("__init__.py")
        if not ast.get_docstring(ast.parse(init.read_text()))
    ]
    assert silent == []


# A stage module's own imports that may change without its outputs changing, so they are not DVC
# deps of its stage: each with the reason.
NOT_DEPS = {
    # check_prunable builds a file:/python: model before a run starts; the stage never calls it.
    ("prune", "tasks/stages/models.py"): "used before the run, not by the stage",
}


def test_every_module_a_stage_imports_is_among_its_dvc_deps() -> None:
    """A stage's code is its deps: a module it imports (distill.py for prune, say) that dvc.yaml does
    not list would change the stage's outputs while `dvc repro` and the flow's plan call it up to date."""
    import yaml

    from tasks.stages import STAGES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, function in STAGES.items():
        module = modules()[function.__module__]
        deps = [Path(dep) for dep in stages[name]["deps"]]
        assert module.relative_to(REPO) in deps or any(module.relative_to(REPO).is_relative_to(d) for d in deps)
        for dotted in sorted(imported(module)):
            path = modules().get(dotted)
            if path is None or path.name == "__init__.py" or not dotted.startswith("tasks.stages."):
                continue
            relative = path.relative_to(REPO)
            covered = any(relative == dep or relative.is_relative_to(dep) for dep in deps)
            if not covered and (name, relative.as_posix()) not in NOT_DEPS:
                missing.append(f"{name}: {relative}")
    assert not missing, missing
