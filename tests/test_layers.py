"""Imports point one way: data <- models <- stages <- retrieval <- methods / evaluation <- cli,
no modules import each other in a circle, and no method imports another. Also the shape of a
file: at most 650 lines, no use of another module's private names, ``__all__`` only in package
``__init__`` files after their imports.

Checked by walking the AST of every module (imports inside functions count too). The registry
(``gitd.registry``) sits below the methods: it finds them by walking the ``gitd.methods`` package
at run time, never by importing one, so the report and the evaluation may look methods up
without depending on them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gitd

SRC = Path(gitd.__file__).parent

# package (or module) -> packages it must never import
FORBIDDEN = {
    "gitd.data": ("gitd.benchmark", "gitd.models", "gitd.stages", "gitd.retrieval",
                  "gitd.methods", "gitd.evaluation", "gitd.report", "gitd.cli", "gitd.registry",
                  "gitd.config"),
    "gitd.models": ("gitd.benchmark", "gitd.stages", "gitd.retrieval", "gitd.methods",
                    "gitd.evaluation", "gitd.report", "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.stages": ("gitd.benchmark", "gitd.retrieval", "gitd.methods", "gitd.evaluation",
                    "gitd.report", "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.retrieval": ("gitd.benchmark", "gitd.methods", "gitd.evaluation", "gitd.report",
                       "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.methods": ("gitd.benchmark", "gitd.evaluation", "gitd.report", "gitd.cli",
                     "gitd.config"),
    "gitd.evaluation": ("gitd.benchmark", "gitd.methods", "gitd.report", "gitd.cli"),
    "gitd.report": ("gitd.benchmark", "gitd.methods", "gitd.evaluation", "gitd.cli"),
    "gitd.registry": ("gitd.methods", "gitd.cli", "gitd.config", "gitd.evaluation",
                      "gitd.report"),
    "gitd.settings": ("gitd.methods", "gitd.registry", "gitd.models", "gitd.stages"),
    "gitd.store": ("gitd.methods", "gitd.registry", "gitd.models", "gitd.stages",
                   "gitd.data"),
    "gitd.config": ("gitd.methods", "gitd.cli"),
    # gitd benchmark makes sets with the methods and evaluates them: above both, below the CLI.
    "gitd.benchmark": ("gitd.cli",),
    # The executor of a method's plan and the one presets registry sit below every method.
    "gitd.plan": ("gitd.methods", "gitd.registry", "gitd.stages", "gitd.evaluation",
                  "gitd.report", "gitd.cli", "gitd.config"),
    "gitd.presets": ("gitd.methods", "gitd.registry", "gitd.models", "gitd.stages",
                     "gitd.data", "gitd.evaluation", "gitd.report", "gitd.cli", "gitd.config"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(path: Path):
    """``(module, names)`` for every import in ``path``, relative ones resolved: ``import a.b``
    gives ``("a.b", [])``, ``from a import b, c`` gives ``("a", ["b", "c"])``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path) if path.is_relative_to(SRC) else path.stem
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, [alias.name for alias in node.names]


def imports_of(path: Path) -> set[str]:
    out: set[str] = set()
    for mod, names in import_statements(path):
        out.add(mod)
        out.update(f"{mod}.{name}" for name in names)
    return {m for m in out if m == "gitd" or m.startswith("gitd.")}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_every_import_points_down():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        for layer, forbidden in FORBIDDEN.items():
            if not _under(me, layer):
                continue
            for imp in imports_of(path):
                if any(_under(imp, f) for f in forbidden) and not _under(imp, layer):
                    bad.append(f"{me} imports {imp}")
    assert not bad, "\n".join(bad)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    # The checker itself: a lazy import in a function body is still an import.
    probe = SRC / "methods" / "coreset.py"
    assert "gitd.models.features" in imports_of(probe)
    assert "gitd.retrieval.train" in imports_of(probe)


def import_graph() -> dict[str, set[str]]:
    """Module -> the gitd modules it imports. ``from gitd.stages import arrays`` is an edge to
    ``gitd.stages.arrays`` alone (as ``import gitd.stages.arrays`` is: loading a submodule
    loads its package's ``__init__`` first whoever asks, so that is no edge of the importer's);
    ``from gitd.stages.encode import LatentStore`` is one to ``gitd.stages.encode``."""
    paths = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for me, path in paths.items():
        edges = set()
        for mod, names in import_statements(path):
            targets = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in paths]
            if len(targets) < len(names) or not names:
                targets.append(mod)  # a name defined in the module (or package) itself
            edges.update(t for t in targets if t in paths and t != me)
        graph[me] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_modules_import_each_other_in_a_circle():
    # A circle inside a package means no module of it can be read (or tested, or moved) alone.
    bad = [" <-> ".join(c) for c in cycles(import_graph())]
    assert not bad, "import circles:\n" + "\n".join(bad)


def test_the_cycle_finder_finds_a_circle_and_only_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_submodules_and_names():
    graph = import_graph()
    assert "gitd.models.tiny" in graph["gitd.models.unclip"]  # from gitd.models import tiny
    assert "gitd.models" not in graph["gitd.models.unclip"]
    assert "gitd.store" in graph["gitd.stages"]  # from gitd.store import Damaged, ...


# -- one file, one role ----------------------------------------------------------------------------
REPO = SRC.parent.parent
MAX_LINES = 650


def python_files() -> list[Path]:
    return sorted(p for d in ("src", "tests", "benchmarks") for p in (REPO / d).rglob("*.py"))


def test_no_source_file_over_650_lines():
    # A file past this holds more than one role (issue 18): split it by role, not by size.
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in python_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def private_uses(path: Path) -> list[str]:
    """Names starting with one underscore that ``path`` takes from another gitd module: imported
    (``from gitd.x import _y``) or reached through an imported name (``x._y``, ``Class._y``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    out = []
    for mod, names in import_statements(path):
        if not (mod == "gitd" or mod.startswith("gitd.")):
            continue
        if not names:  # import gitd.x.y binds "gitd"
            imported.add(mod.split(".")[0])
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                out.append(f"from {mod} import {name}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("gitd") \
                    and not node.level:
                continue
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if isinstance(node, ast.ImportFrom) or alias.name.startswith("gitd"):
                    imported.add(bound)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in imported:
                out.append(ast.unparse(node))
    return out


def test_no_module_uses_another_modules_private_names():
    bad = [f"{module_name(p)}: {use}" for p in sorted(SRC.rglob("*.py"))
           for use in private_uses(p)]
    assert not bad, "\n".join(bad)


def test_the_private_name_check_sees_imports_and_attributes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy as np\nfrom gitd.store import _x\nimport gitd.log\n"
                     "from gitd.models import tiny\n"
                     "def f(self):\n    return gitd.log._quiet, tiny._y(), self._z, np._w\n",
                     encoding="utf-8")
    assert private_uses(probe) == ["from gitd.store import _x", "gitd.log._quiet", "tiny._y"]


def test_all_is_declared_only_by_packages_after_their_imports():
    # One rule: a package's __init__ lists what it re-exports, after its imports; a module
    # declares no __all__ (gitd uses no star-imports, so it would only drift from the code).
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        at = [i for i, node in enumerate(body) if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)]
        if at and path.name != "__init__.py":
            bad.append(f"{module_name(path)}: a module with __all__")
        elif at and any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in body[at[0]:]):
            bad.append(f"{module_name(path)}: imports after __all__")
    assert not bad, "\n".join(bad)


def test_no_method_imports_another():
    # What two methods share (a stage, a feature space) lives below them, in gitd.stages; the
    # base class and the settings groups several methods declare (gitd.methods.fields) are no
    # method.
    graph = import_graph()
    shared = {"gitd.methods", "gitd.methods.base", "gitd.methods.fields"}
    bad = [f"{me} imports {other}" for me, edges in graph.items()
           if me.startswith("gitd.methods.") and me not in shared
           for other in edges if other.startswith("gitd.methods.") and other not in shared]
    assert not bad, "\n".join(bad)
