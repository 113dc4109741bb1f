"""One registry of methods: distillations (``gitd distill --method M``) and selections
(``gitd select --method M``).

In the spirit of timm's ``register_model`` + ``default_cfgs`` and of diffusers' pipelines that
own their defaults, a method is a class, registered with ``@register_method(name)``, that
carries

* ``Settings``: a frozen dataclass of its settings (a subclass of :class:`MethodSettings`),
  every field declared with ``gitd.settings.setting`` (constraint + help), from which the
  validator and the command-line flags are generated;
* ``presets``: named sets of field values (``paper``, ``fast``, ``tiny``, ...), applied over the
  field defaults, and registered in the one registry of presets (``gitd.presets``) as
  ``KIND:NAME``;
* ``roles``: the models it needs, role -> ``gitd.models.roles.Role`` (a model-registry kind and
  the settings fields that name the model and its revision);
* ``plan(settings, runtime)``: its plan (``gitd.plan.Plan``: each stage with its function,
  frozen settings, model roles and the entries it reads), which the base class runs and from
  which every cache key is derived;
* ``run(data, out, ...)``: the run around the plan (``gitd.methods.base``,
  ``gitd.methods.coreset``).

Methods are discovered: every module of the ``gitd.methods`` package is imported on the first
lookup, so a new method is one new file there (plus its tests), and the CLI, config files,
manifests, reports and docs find it here. This module is below ``gitd.methods`` (it never
imports a method by name; discovery walks the package), so the report and the evaluation can
look methods up without depending on them.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from gitd.errors import MAX_SEED, ConfigError
from gitd.presets import Presets, presets_of, register_presets
from gitd.settings import Interval, Text, field_names, setting, validate

KINDS = ("distill", "select")
# Far beyond any sensible run; an upper bound turns a typo into one line naming the setting.
MAX_PAIRS = 10_000_000
_METHODS: dict[str, dict[str, type["Method"]]] = {kind: {} for kind in KINDS}
_DISCOVERED = False
METHODS_PACKAGE = "gitd.methods"


@dataclass(frozen=True)
class MethodSettings:
    """What every method has. ``method`` names the registered method; the rest is shared."""

    # Set by ``Method.configure`` (the registered name); a selection's one stage key includes it.
    method: str | None = setting(None, Text(), "the method these settings belong to",
                                 optional=True, flags=("--method",), cli=False)
    pairs: int | None = setting(None, Interval(int, 1, MAX_PAIRS), "number of pairs to produce",
                                optional=True, flags=("--pairs", "-k"), cli=False)
    seed: int = setting(0, Interval(int, 0, MAX_SEED),
                        "seed of the whole run; same seed, machine and device: same output")
    # Results depend on the device only through its resolved type, which every model stage's
    # settings record (``gitd.models.roles.Runtime``).
    device: str = setting("auto", Text(), "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N "
                          "or mps")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "MethodSettings":
        check_keys(type(self), changes, "override")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "MethodSettings":
        """Check every field; raise ``ConfigError`` naming the first bad one. Returns self."""
        discover()
        for kind in KINDS:
            cls = _METHODS[kind].get(self.method)
            if cls is not None and isinstance(self, cls.Settings):
                return cls.validate(self)
        get_method(self.method)  # an unknown name: the one-line error listing the known ones
        raise ConfigError(f"method {self.method!r} does not take {type(self).__name__}")


class Method:
    """Base of every registered method (see the module docstring). Subclasses set the class
    attributes and implement ``run``; an instance holds one run's settings and, optionally,
    prebuilt models by role (tests pass tiny ones)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "distill"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str | None] = None
    roles: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: MethodSettings, models: dict[str, Any] | None = None):
        self.settings = settings
        self.given_models = dict(models or {})

    # -- description ---------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (listings, help, reports)."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0].strip()

    # -- settings ------------------------------------------------------------------------
    @classmethod
    def preset_table(cls) -> Presets:
        """This method's presets, from the one registry (``gitd.presets``)."""
        return presets_of(f"{cls.kind}:{cls.name}")

    @classmethod
    def configure(cls, preset: str | None = None, **values: Any) -> MethodSettings:
        """Settings of this method: the field defaults, then ``preset`` (default
        ``default_preset``), then ``values``. Nothing is validated here (``validate`` is)."""
        check_keys(cls.Settings, values, "override")
        values.pop("method", None)
        return cls.preset_table().make(preset, **values, method=cls.name)

    @classmethod
    def validate(cls, settings: MethodSettings) -> MethodSettings:
        if not isinstance(settings, cls.Settings):
            raise ConfigError(f"method {cls.name} needs {cls.Settings.__name__}, got "
                              f"{type(settings).__name__}")
        if settings.method is None:
            raise ConfigError(f"method must be {cls.name!r} for {cls.Settings.__name__}, got None "
                              f"(make settings with {cls.__name__}.configure)")
        validate(settings)
        if settings.method != cls.name:
            raise ConfigError(f"method must be {cls.name!r} for {cls.Settings.__name__}, got "
                              f"{settings.method!r}")
        preset = getattr(settings, "preset", None)
        names = cls.preset_table().names
        if preset is not None and names and preset not in names:
            raise ConfigError(f"preset must be one of {', '.join(names)}; got {preset!r}")
        cls.check(settings)
        return settings

    @classmethod
    def check(cls, settings: MethodSettings) -> None:
        """Rules between fields that no single constraint states (override when needed)."""

    # -- the plan ------------------------------------------------------------------------
    @classmethod
    def plan(cls, settings: MethodSettings, runtime: Any) -> Any:
        """The ``gitd.plan.Plan`` these settings run: every stage with its function, frozen
        settings, model roles and the entries it reads, in run order. Every cache key comes
        from here."""
        from gitd.plan import Plan

        return Plan()

    def run(self, data, out, **io: Any):  # pragma: no cover - abstract
        raise NotImplementedError


def register_method(name: str, *, kind: str = "distill") -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass as ``name`` of ``kind``
    (``distill`` or ``select``). A name may exist in both kinds (``pds``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")

    def deco(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError("register_method decorates a gitd.registry.Method subclass")
        existing = _METHODS[kind].get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"{kind} method {name!r} is registered twice "
                             f"({existing.__module__} and {cls.__module__})")
        if not issubclass(cls.Settings, MethodSettings):
            raise TypeError(f"{cls.__name__}.Settings must subclass MethodSettings")
        cls.name = name
        cls.kind = kind
        register_presets(f"{kind}:{name}", cls.Settings, cls.presets,
                         default=cls.default_preset, what=f"method {name}")
        _METHODS[kind][name] = cls
        return cls

    return deco


def discover() -> None:
    """Import every module of ``gitd.methods`` once, so that their decorators run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(METHODS_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{METHODS_PACKAGE}.{info.name}")


def list_methods(kind: str = "distill") -> list[str]:
    """Registered names of ``kind``, in registration order: ``discover`` imports the modules of
    ``gitd.methods`` alphabetically, so the default method (``gitd.config.DEFAULT_METHOD``) is
    not necessarily first."""
    discover()
    return list(_METHODS[kind])


def get_method(name: str, kind: str = "distill") -> type[Method]:
    """The method class registered as ``name``; an unknown name is a one-line ``ConfigError``
    listing the known ones."""
    discover()
    try:
        return _METHODS[kind][name]
    except (KeyError, TypeError):
        known = ", ".join(_METHODS[kind])
        verb = "distill" if kind == "distill" else "select"
        raise ConfigError(f"unknown {verb} method {name!r}; known: {known}") from None


def all_methods() -> list[type[Method]]:
    """Every registered method class, distillations first."""
    discover()
    return [cls for kind in KINDS for cls in _METHODS[kind].values()]


def summary_of(name: str, kind: str = "distill") -> str | None:
    """A registered method's one-line description, or None for a name not registered (an
    output written by another version or by hand); never raises."""
    discover()
    cls = _METHODS.get(kind, {}).get(name)
    return cls.summary() if cls is not None else None


def neutral_fields() -> set[str]:
    """Every settings field that some method declares as not affecting results."""
    from gitd.settings import declared

    return {f.name for cls in all_methods() for f, d in declared(cls.Settings)
            if not d.affects_results}


def describe(kind: str | None = None, name: str | None = None) -> str:
    """Every registered method (or one), as text: summary, presets, model roles and every
    setting with its flag, rule, default and help. ``gitd methods`` prints this; it is the
    documentation that cannot fall behind the code."""
    from gitd.settings import declared, flags_of

    lines: list[str] = []
    for cls in all_methods():
        if (kind and cls.kind != kind) or (name and cls.name != name):
            continue
        lines.append(f"{cls.kind} {cls.name}: {cls.summary()}")
        table = cls.preset_table()
        if table.names:
            default = f" (default {table.default})" if table.default else ""
            lines.append(f"  presets: {', '.join(table.names)}{default}")
        if cls.roles:
            lines.append("  models: " + ", ".join(
                f"{role} ({spec.kind}, --{spec.model.replace('_', '-')})"
                for role, spec in cls.roles.items()))
        lines.append("  settings:")
        for f, d in declared(cls.Settings):
            flag = ("/".join(flags_of(f.name, d)) if d.cli or d.flags
                    else "(set by the command)")
            rule = d.constraint.describe() + (" or unset" if d.optional else "")
            neutral = "; not part of any cache key" if not d.affects_results else ""
            lines.append(f"    {f.name} = {f.default!r}  [{flag}; {rule}{neutral}]")
            lines.append(f"        {d.help}")
        lines.append("")
    if not lines:
        raise ConfigError(f"no registered method {name!r}" + (f" of kind {kind}" if kind else ""))
    return "\n".join(lines).rstrip() + "\n"


def check_keys(settings_cls: type, data: dict[str, Any], source: str) -> None:
    """A key that is no field of ``settings_cls`` is a ``ConfigError`` listing the known ones."""
    known = field_names(settings_cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known settings: "
                          f"{', '.join(known)}")
