"""Imports point one way: data <- models <- stages <- retrieval <- methods / evaluation <- cli.

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
    "gitd.data": ("gitd.models", "gitd.stages", "gitd.retrieval", "gitd.methods",
                  "gitd.evaluation", "gitd.report", "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.models": ("gitd.stages", "gitd.retrieval", "gitd.methods", "gitd.evaluation",
                    "gitd.report", "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.stages": ("gitd.retrieval", "gitd.methods", "gitd.evaluation", "gitd.report",
                    "gitd.cli", "gitd.registry", "gitd.config"),
    "gitd.retrieval": ("gitd.methods", "gitd.evaluation", "gitd.report", "gitd.cli",
                       "gitd.registry", "gitd.config"),
    "gitd.methods": ("gitd.evaluation", "gitd.report", "gitd.cli", "gitd.config"),
    "gitd.evaluation": ("gitd.methods", "gitd.report", "gitd.cli"),
    "gitd.report": ("gitd.methods", "gitd.evaluation", "gitd.cli"),
    "gitd.registry": ("gitd.methods", "gitd.cli", "gitd.config", "gitd.evaluation",
                      "gitd.report"),
    "gitd.settings": ("gitd.methods", "gitd.registry", "gitd.models", "gitd.stages"),
    "gitd.store": ("gitd.methods", "gitd.registry", "gitd.models", "gitd.stages",
                   "gitd.data"),
    "gitd.config": ("gitd.methods", "gitd.cli"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
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
    assert "gitd.stages.features" in imports_of(probe)
    assert "gitd.retrieval.train" in imports_of(probe)
