"""What a benchmark runs: its declared settings and the cells they make.

A cell is one training set evaluated once: a method at a number of pairs (``random-100``), or a
set made elsewhere (``--extra NAME=PATH``: a LoRS ``.pt``, an MTT-VL pair, a gitd output, any
annotation file). Light to import: the command line builds its parser from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gitd.errors import MAX_SEED, ConfigError
from gitd.settings import Interval, PathText, Text, setting

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
KINDS = ("distill", "select")


@dataclass(frozen=True)
class BenchmarkSettings:
    """How a benchmark makes its sets (the evaluation's settings are ``gitd evaluate``'s)."""

    methods: str = setting("random,herding,kcenter", Text(),
                           "methods, comma-separated: selections (gitd select) and "
                           "distillations (gitd distill); select:NAME or distill:NAME picks the "
                           "kind of a name that is both (pds is distilled unless so)",
                           metavar="M[,M...]")
    pairs: str = setting("100,200,500", Text(), "numbers of pairs, comma-separated",
                         metavar="K[,K...]")
    set_seed: int = setting(0, Interval(int, 0, MAX_SEED),
                            "seed every method makes its set with", metavar="S")
    preset: str | None = setting(None, Text(), "preset of the distillation methods (gitd "
                                 "distill --preset; default: each method's own)", optional=True)
    config: str | None = setting(None, PathText(), "settings file of the distillation methods "
                                 "(gitd distill --config; a key of another method is ignored)",
                                 optional=True, metavar="FILE")


@dataclass(frozen=True)
class Cell:
    """One training set of the benchmark and how it is made."""

    name: str
    kind: str  # "select", "distill" or "extra"
    method: str | None = None
    pairs: int | None = None
    path: str | None = None  # an extra set's path


def parse_pairs(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"pairs must be positive integers separated by commas, got "
                              f"{text!r}")
        out.append(int(part))
    if len(set(out)) < len(out):
        raise ConfigError(f"pairs names a number twice in {text!r}")
    return out


def method_kind(spec: str) -> tuple[str, str]:
    """``(kind, name)`` of a ``--methods`` entry; an unknown name is a ``ConfigError``."""
    from gitd.registry import get_method, list_methods

    spec = spec.strip()
    if ":" in spec:
        kind, name = spec.split(":", 1)
        if kind not in KINDS:
            raise ConfigError(f"method {spec!r}: the kind before ':' must be select or distill")
        get_method(name, kind)
        return kind, name
    if spec in list_methods("distill"):
        return "distill", spec
    get_method(spec, "select")
    return "select", spec


def parse_extra(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"--extra {text!r}: expected NAME=PATH")
    name, path = text.split("=", 1)
    name, path = name.strip(), path.strip()
    if not _NAME.match(name):
        raise ConfigError(f"--extra {text!r}: the name must be letters, digits, '_', '.', '+' "
                          "or '-' (it names the cell's files)")
    if not Path(path).exists():
        raise ConfigError(f"--extra {text!r}: {path} does not exist")
    return name, path


def cells_of(settings: BenchmarkSettings, extras: list[str]) -> list[Cell]:
    """Every cell, in the table's order: methods as given, each at every number of pairs, then
    the extra sets. A repeated cell name is a ``ConfigError``."""
    cells = []
    sizes = parse_pairs(settings.pairs)
    for spec in [m for m in settings.methods.split(",") if m.strip()]:
        kind, name = method_kind(spec)
        for k in sizes:
            cells.append(Cell(f"{name}-{k}", kind, name, k))
    for text in extras:
        name, path = parse_extra(text)
        cells.append(Cell(name, "extra", path=path))
    names = [c.name for c in cells]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"benchmark cells named twice: {', '.join(twice)}")
    if not cells:
        raise ConfigError("nothing to benchmark: give --methods or --extra")
    return cells
