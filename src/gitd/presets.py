"""The one registry of presets: named sets of field values for any settings class.

Every preset of gitd lives here, whatever it configures: a method's (``distill:gitd``,
``select:herding``: ``gitd.registry.register_method`` registers the class's ``presets``), the
fine-tuning run's (``finetune``), the caption command's (``caption``), and any other settings
class that registers a table (``register_presets``). A preset holds values of its settings
class's fields, checked when it is registered, so a typo fails at import, not in a run.
Settings are made the same way everywhere (``make``): the field defaults, then the preset, then
the values given.

This module sits beside ``gitd.settings``, below the stages, so a stage's command can register
its presets where its settings are declared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gitd.errors import ConfigError

_TABLES: dict[str, "Presets"] = {}


@dataclass(frozen=True)
class Presets:
    """The presets of one settings class. ``owner``: what they configure (``finetune``,
    ``distill:gitd``); ``what``: how a message names it (``method gitd``); ``default``: the
    preset used when none is given (None: the field defaults alone)."""

    owner: str
    settings: type
    table: dict[str, dict[str, Any]]
    default: str | None = None
    what: str = ""
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.table)

    def values(self, name: str | None) -> dict[str, Any]:
        """The field values of preset ``name`` (``default`` when None); an unknown name is a
        one-line ``ConfigError`` listing the known ones."""
        chosen = name if name is not None else self.default
        if chosen is None:
            return {}
        if chosen not in self.table:
            raise ConfigError(f"unknown preset {chosen!r} for {self.what or self.owner}; choose "
                              f"one of: {', '.join(self.table) or 'none'}")
        return dict(self.table[chosen])

    def chosen(self, name: str | None) -> str | None:
        return name if name is not None else self.default

    def make(self, name: str | None = None, **values: Any) -> Any:
        """``settings(**{defaults, preset, values})``; a ``preset`` field, if the class has
        one, records the preset's name. Values are not validated here (``validate`` is)."""
        fields = {f.name for f in dataclasses.fields(self.settings)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for "
                              f"{self.what or self.owner}; known: {', '.join(sorted(fields))}")
        base = self.values(name)
        chosen = self.chosen(name)
        if "preset" in fields and chosen is not None:
            base["preset"] = chosen
        return self.settings(**{**base, **values})


def register_presets(owner: str, settings: type, table: dict[str, dict[str, Any]], *,
                     default: str | None = None, what: str = "",
                     notes: dict[str, str] | None = None) -> Presets:
    """Register (or replace: a module imported again) the presets of ``settings`` as
    ``owner``; every key of every preset must be a field of ``settings``. ``notes``: a few
    words on a preset, for ``--help``."""
    fields = {f.name for f in dataclasses.fields(settings)}
    for name, values in table.items():
        unknown = sorted(set(values) - fields)
        if unknown:
            raise TypeError(f"preset {name!r} of {owner} sets {', '.join(unknown)}, which "
                            f"{settings.__qualname__} does not have")
    if default is not None and default not in table:
        raise TypeError(f"default preset {default!r} of {owner} is not one of its presets")
    presets = Presets(owner, settings, dict(table), default, what, dict(notes or {}))
    _TABLES[owner] = presets
    return presets


def presets_of(owner: str) -> Presets:
    """The registered presets of ``owner``."""
    try:
        return _TABLES[owner]
    except KeyError:
        raise ConfigError(f"no presets registered for {owner!r}; known: "
                          f"{', '.join(sorted(_TABLES))}") from None


def add_preset_argument(parser, tables: list[Presets], help: str) -> None:
    """The ``--preset`` flag of a command whose settings come from ``tables``: its choices
    are their preset names, its help ``help`` then each preset's note and the default."""
    names = list(dict.fromkeys(n for t in tables for n in t.names))
    notes = {n: note for t in tables for n, note in t.notes.items()}
    defaults = list(dict.fromkeys(t.default for t in tables if t.default))
    text = help + ": " + "; ".join(f"{n} ({notes[n]})" if n in notes else n for n in names)
    if defaults:
        text += f"; default {' / '.join(defaults)}"
    parser.add_argument("--preset", choices=names, help=text)


def all_presets() -> dict[str, Presets]:
    """Every registered table (methods' only once ``gitd.registry`` has discovered them)."""
    return dict(_TABLES)
