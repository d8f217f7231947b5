"""The shape of the library: no import cycle between its modules, no import running backwards
through the pipeline's layers, no module doing too many jobs (README, Architecture)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "forensics"
MAX_LINES = 800
"""A module longer than this does several jobs: cut it along them (README, Architecture)."""


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (functions included; not under
    ``if TYPE_CHECKING``). ``from pkg import sub`` counts as importing ``pkg.sub``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
            out |= subs
            if len(subs) < len(node.names) and source in MODULES:
                out.add(source)
    out.discard(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    graph = {name: imported(name, path) for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


STAGES = ("forensics.traces", "forensics.sources", "forensics.bundle", "forensics.simulate", "forensics.analysis",
          "forensics.report", "forensics.cli")
"""The pipeline's stages (README, Architecture). Every other module is shared by all of them
(schema, evidence, scan, messages, series, timeutil, credentials, ... and the data packages
catalog, profiles, rules, contracts) and imports no stage."""
MUST_NOT_IMPORT = {
    "forensics.traces": ("forensics.sources", "forensics.bundle", "forensics.simulate", "forensics.analysis",
                         "forensics.report", "forensics.cli"),
    # sources read; the registry names the simulator and bundle read-back as sources of the family
    "forensics.sources": ("forensics.analysis", "forensics.report", "forensics.cli"),
    "forensics.bundle": ("forensics.sources", "forensics.simulate", "forensics.analysis", "forensics.report",
                         "forensics.cli"),
    # the simulator makes evidence (and seeds the stack through the sources); it never judges it
    "forensics.simulate": ("forensics.analysis", "forensics.report", "forensics.cli"),
    "forensics.analysis": ("forensics.bundle", "forensics.simulate", "forensics.report", "forensics.cli"),
    "forensics.report": ("forensics.cli",),
}
"""Stage -> the stages it must not import: what flows backwards through the pipeline."""


def stage(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def backwards(graph: dict[str, set[str]]) -> list[str]:
    """Imports that break the layering: a shared module importing a stage, or a stage
    importing one of its :data:`MUST_NOT_IMPORT`."""
    found = []
    for name, deps in sorted(graph.items()):
        mine = stage(name)
        banned = MUST_NOT_IMPORT.get(mine, ()) if mine else STAGES
        found += [f"{name} -> {dep}" for dep in sorted(deps) if stage(dep) in banned]
    return found


def test_no_import_runs_backwards_through_the_layers():
    graph = {name: imported(name, path) for name, path in MODULES.items()}
    assert backwards(graph) == []


def test_the_layer_check_finds_a_backwards_import():
    graph = {"forensics.simulate.metrics": {"forensics.analysis.alerts", "forensics.schema"},
             "forensics.sources.mongo": {"forensics.simulate"},
             "forensics.series": {"forensics.analysis.detectors"}, "forensics.report.rca": {"forensics.analysis"}}
    assert backwards(graph) == ["forensics.series -> forensics.analysis.detectors",
                                "forensics.simulate.metrics -> forensics.analysis.alerts"]


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
