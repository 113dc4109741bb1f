"""Declared settings: every field states its constraint and its help once.

In the spirit of scikit-learn's ``_parameter_constraints``: a settings class is a frozen
dataclass whose fields are made with :func:`setting`, which records the field's constraint
(:class:`Interval`, :class:`Options`, :class:`Boolean`, :class:`Text`), whether ``None`` is
allowed, its help text, and whether it affects results. From that one declaration come

* :func:`validate`: the one validator; a bad value is a one-line ``ConfigError`` naming the
  field, the rule and the value (constructors only store, as in scikit-learn; validation happens
  where work starts);
* :func:`add_arguments`: the CLI's flags, types, choices, metavars and help;
* :func:`key_fields`: what goes into a cache key. A field declared ``affects_results=False``
  (a work folder, a number of loader processes) is left out of every fingerprint, and that
  is visible where the field is declared, not decided beside the code that computes a key.

Stage settings (``gitd.plan``) are frozen dataclasses too; plain dataclass fields
there are part of the key, and :func:`setting` marks the exceptions.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from gitd.errors import ConfigError
from gitd.errors import short_value as _short

_META = "gitd"


# -- constraints --------------------------------------------------------------------------------
class Constraint:
    """One rule a value must satisfy. ``problem(value)`` is None when the value is fine, else
    the end of a sentence that starts with the field's name (``must be >= 1, got 0``)."""

    metavar: str | None = None

    def problem(self, value: Any) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """Parse a command-line string (argparse ``type``)."""
        return text

    @property
    def choices(self) -> tuple | None:
        return None

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _fmt(x: float) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:g}"


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (int or float) in [low, high]; ``None`` bounds are open-ended.

    ``closed`` says which ends are included: ``both`` (default), ``left``, ``right``,
    ``neither``. ``multiple_of`` adds a divisibility rule (integers)."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    multiple_of: int | None = None

    def __post_init__(self):
        if self.kind not in (int, float):
            raise TypeError("Interval kind must be int or float")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad closed={self.closed!r}")

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "INT" if self.kind is int else "X"

    def parse(self, text: str) -> Any:
        try:
            return self.kind(text)
        except ValueError:
            what = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {_short(text)}") from None

    def arg_type(self):
        """The argparse ``type``: an integer with both bounds is checked while parsing, so
        ``--seed 2**80`` is a usage error, not an overflow deep inside numpy."""
        if self.kind is not int or self.low is None or self.high is None:
            return self.parse
        low, high = int(self.low), int(self.high)

        def integer(text: str) -> int:
            try:
                value = int(text, 10)
            except ValueError:
                value = None
            if value is None or not low <= value <= high:
                raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got "
                                                 f"{_short(text)}")
            return value

        return integer

    def describe(self) -> str:
        if self.kind is int and self.low is not None and self.high is not None:
            text = f"[{_fmt(self.low)}..{_fmt(self.high)}]"
        elif self.low is not None and self.high is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            text = f"{op} {_fmt(self.low)}"
        elif self.high is not None and self.low is None:
            op = "<=" if self.closed in ("both", "right") else "<"
            text = f"{op} {_fmt(self.high)}"
        elif self.low is None:
            text = "any value"
        else:
            lo = "[" if self.closed in ("both", "left") else "("
            hi = "]" if self.closed in ("both", "right") else ")"
            text = f"in {lo}{_fmt(self.low)}, {_fmt(self.high)}{hi}"
        if self.multiple_of:
            text += f", a multiple of {self.multiple_of}"
        return text

    def problem(self, value: Any) -> str | None:
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer, got {_short(value)}"
        elif (isinstance(value, bool) or not isinstance(value, (int, float))
              or math.isnan(value)):
            return f"must be a number, got {_short(value)}"
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left")
                                      else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right")
                                        else value < self.high)
        if self.kind is float and self.low is not None and self.high is not None \
                and not (low_ok and high_ok):
            return f"must be {self.describe()}, got {_short(value)}"
        if self.low is not None:
            if self.closed in ("both", "left") and value < self.low:
                return f"must be >= {_fmt(self.low)}, got {_short(value)}"
            if self.closed in ("right", "neither") and value <= self.low:
                return f"must be > {_fmt(self.low)}, got {_short(value)}"
        if self.high is not None:
            if self.closed in ("both", "right") and value > self.high:
                return f"must be <= {_fmt(self.high)}, got {_short(value)}"
            if self.closed in ("left", "neither") and value >= self.high:
                return f"must be < {_fmt(self.high)}, got {_short(value)}"
        if self.multiple_of and value % self.multiple_of:
            return f"must be a multiple of {self.multiple_of}, got {_short(value)}"
        return None


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of strings (scikit-learn's ``StrOptions``)."""

    values: tuple[str, ...]

    def __init__(self, *values: str):
        object.__setattr__(self, "values", tuple(values))

    @property
    def choices(self) -> tuple[str, ...]:
        return self.values

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)

    def problem(self, value: Any) -> str | None:
        if value not in self.values:
            return f"must be one of {', '.join(self.values)}; got {value!r}"
        return None


@dataclass(frozen=True)
class Boolean(Constraint):
    def describe(self) -> str:
        return "true or false"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


@dataclass(frozen=True)
class Text(Constraint):
    """A string; ``empty=False`` (default) also refuses blank strings."""

    empty: bool = False
    metavar: str | None = None

    def describe(self) -> str:
        return "a string" if self.empty else "a non-empty string"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or (not self.empty and not value.strip()):
            return f"must be {self.describe()}, got {value!r}"
        return None


@dataclass(frozen=True)
class PathText(Constraint):
    """A file or folder path: a non-empty string or an ``os.PathLike``."""

    metavar: str | None = "DIR"

    def describe(self) -> str:
        return "a path"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
            return None
        return f"must be a path, got {value!r}"


# -- declaring fields ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """What :func:`setting` records about one field."""

    constraint: Constraint
    help: str
    optional: bool = False
    affects_results: bool = True
    flags: tuple[str, ...] | None = None
    metavar: str | None = None
    cli: bool = True


def setting(default: Any, constraint: Constraint, help: str, *, optional: bool = False,
            affects_results: bool = True, flags: Iterable[str] | None = None,
            metavar: str | None = None, cli: bool = True) -> Any:
    """A dataclass field with its rule and help.

    ``optional``: ``None`` is allowed (it means "the stage's own default").
    ``affects_results=False``: the value cannot change any output byte (a work folder, a number
    of decoding processes), so it is left out of cache keys; say why in ``help``.
    ``flags``: command-line flags when not ``--field-name`` (a boolean defaults to
    ``--name/--no-name``). ``cli=False``: not a flag (set by the command itself).
    """
    meta = Setting(constraint, help, optional, affects_results,
                   tuple(flags) if flags is not None else None, metavar, cli)
    return field(default=default, metadata={_META: meta})


def inherit(owner: type, name: str, default: Any) -> Any:
    """Field ``name`` of the settings group ``owner`` (a dataclass of shared fields) with
    another default, for a method whose paper uses another value: the rule, help and flags stay
    declared once, in the group."""
    f = next((f for f in dataclasses.fields(owner) if f.name == name), None)
    if f is None or declaration(f) is None:
        raise TypeError(f"{owner.__qualname__} declares no setting {name!r}")
    return field(default=default, metadata=f.metadata)


def declaration(f: dataclasses.Field) -> Setting | None:
    return f.metadata.get(_META)


def declared(cls_or_obj: Any) -> list[tuple[dataclasses.Field, Setting]]:
    """(field, declaration) for every declared field, in order."""
    return [(f, declaration(f)) for f in dataclasses.fields(cls_or_obj)
            if declaration(f) is not None]


def validate(obj: Any) -> Any:
    """Check every declared field of ``obj``; raise ``ConfigError`` naming the first bad one."""
    for f, decl in declared(obj):
        value = getattr(obj, f.name)
        if value is None and decl.optional:
            continue
        problem = decl.constraint.problem(value)
        if problem is not None:
            raise ConfigError(f"{f.name} {problem}")
    return obj


def check(name: str, value: Any, constraint: Constraint, *, optional: bool = False) -> Any:
    """One value against a rule, where a function is called outside declared settings (the
    library API): the same rules and the same one-line ``ConfigError`` as ``validate``.
    Returns the value."""
    if value is None and optional:
        return value
    problem = constraint.problem(value)
    if problem is not None:
        raise ConfigError(f"{name} {problem}")
    return value


def key_fields(cls_or_obj: Any) -> tuple[str, ...]:
    """Names of the fields that go into a fingerprint: every field not declared
    ``affects_results=False`` (plain dataclass fields count)."""
    out = []
    for f in dataclasses.fields(cls_or_obj):
        decl = declaration(f)
        if decl is None or decl.affects_results:
            out.append(f.name)
    return tuple(out)


def key_dict(obj: Any) -> dict[str, Any]:
    """The fingerprinted part of a settings object, as plain JSON-able data."""
    out = {}
    for name in key_fields(obj):
        value = getattr(obj, name)
        out[name] = key_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def field_names(cls_or_obj: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls_or_obj))


# -- command-line flags -------------------------------------------------------------------------
def flags_of(name: str, decl: Setting) -> tuple[str, ...]:
    if decl.flags is not None:
        return decl.flags
    flag = "--" + name.replace("_", "-")
    if isinstance(decl.constraint, Boolean):
        return (flag, "--no-" + name.replace("_", "-"))
    return (flag,)


def add_argument_for(parser: argparse.ArgumentParser, cls: type, name: str, **extra: Any):
    """The flag of one declared field of ``cls``, with extra ``add_argument`` keywords (for a
    command that handles the field itself, e.g. a required ``--pairs``)."""
    decl = next(d for f, d in declared(cls) if f.name == name)
    _add_flag(parser, name, decl, extra.pop("help", decl.help), **extra)


def _add_flag(parser: argparse.ArgumentParser, name: str, decl: Setting, text: str,
              default_text: str = "", **extra: Any) -> None:
    flags = flags_of(name, decl)
    c = decl.constraint
    if isinstance(c, Boolean):
        text += default_text
        if len(flags) == 2:
            parser.add_argument(flags[0], dest=name, action="store_true",
                                default=argparse.SUPPRESS, help=text)
            parser.add_argument(flags[1], dest=name, action="store_false",
                                default=argparse.SUPPRESS, help=f"the opposite of {flags[0]}")
        else:
            action = "store_false" if flags[0].startswith("--no-") else "store_true"
            parser.add_argument(*flags, dest=name, action=action, default=argparse.SUPPRESS,
                                help=text)
        return
    if isinstance(c, Interval):
        rule = c.describe()
        text += f" {rule}" if rule.startswith("[") else f" ({rule})"
    text += default_text
    parser.add_argument(*flags, dest=name,
                        type=c.arg_type() if isinstance(c, Interval) else c.parse,
                        choices=c.choices,
                        metavar=decl.metavar or (None if c.choices else c.metavar),
                        **{"default": argparse.SUPPRESS, "help": text, **extra})


def add_arguments(parser: argparse.ArgumentParser,
                  classes: Iterable[tuple[str, type]], *, skip: Iterable[str] = (),
                  defaults: dict[str, Any] | None = None) -> dict:
    """Add one flag per declared field of the given settings classes (``(owner, cls)`` pairs,
    e.g. method name and its settings class). A field several classes declare is one flag
    (its constraint from the first); its help names the owners when not every class has it,
    and gives each owner's help when they differ. Values not given stay unset
    (``argparse.SUPPRESS``), so that presets and config files keep their say. ``defaults``:
    owner -> the settings a run gets when no flag is given (its default preset); each flag's
    help then states that value once (per owner where they differ). Returns
    {field name: owners}."""
    skip = set(skip)
    classes = list(classes)
    every = list(dict.fromkeys(owner for owner, _ in classes))
    decls: dict[str, dict[str, Setting]] = {}
    for owner, cls in classes:
        for f, decl in declared(cls):
            if f.name not in skip and decl.cli:
                decls.setdefault(f.name, {}).setdefault(owner, decl)
    for name, by_owner in decls.items():
        decl = next(iter(by_owner.values()))
        helps = list(dict.fromkeys(d.help for d in by_owner.values()))
        if len(helps) > 1:
            text = "; ".join(f"{', '.join(owners)}: {h}"
                             for h, owners in _grouped({o: d.help for o, d in by_owner.items()}))
        elif len(by_owner) < len(every):
            text = f"({', '.join(by_owner)}) {helps[0]}"
        else:
            text = helps[0]
        _add_flag(parser, name, decl, text,
                  default_text=_default_text(name, list(by_owner), defaults or {}, text))
    return {k: list(v) for k, v in decls.items()}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return '""'
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _default_text(name: str, owners: list[str], defaults: dict[str, Any], text: str) -> str:
    """`` (default: X)`` or `` (default: gitd X; pds Y)``; empty where no default is known or
    the help already states one."""
    if re.search(r"\bdefault\b", text):
        return ""
    values = {o: getattr(defaults[o], name) for o in owners
              if o in defaults and hasattr(defaults[o], name)}
    if not values:
        return ""
    shown = {o: _shown(v).replace("%", "%%") for o, v in values.items()}  # argparse formats help
    if len(set(shown.values())) == 1:
        return f" (default: {next(iter(shown.values()))})"
    return " (default: " + "; ".join(f"{', '.join(owners)} {v}"
                                      for v, owners in _grouped(shown)) + ")"


def _grouped(by_owner: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(value, owners having it) for each distinct value, first seen first."""
    out: dict[str, list[str]] = {}
    for owner, value in by_owner.items():
        out.setdefault(value, []).append(owner)
    return list(out.items())
