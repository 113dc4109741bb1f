"""The plan of a run, and the one executor that runs every plan.

A method builds a :class:`Plan` from its settings: one :class:`Entry` per stage, carrying the
stage's name, its frozen settings, the function that runs it, the model roles it uses and the
entries it reads (objects, not names). Ablations and options change the plan, never the code
that runs it. :class:`PlanRunner` then runs the entries in order, the same way for every stage
of every method: open the stage's folder (named by its key), skip what is done, recompute what
is damaged, resume per unit, time it across resumed runs, release each model role after the
last entry that uses it, and record keys, versions and timings for the manifest.

A stage's key (:func:`stage_payload`) is a hash of its name, the qualified name of its settings
class, its declared ``version`` (a class attribute of the settings, bumped by the change that
alters the stage's output: see ``docs/models.md``), every field of its settings that affects
results (``gitd.settings.key_dict``), and the keys of the entries it reads (the dataset's for an
entry that reads none). So a fixed stage recomputes in users' cached work folders, and only that
stage and what is downstream of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from gitd.store import Stage, StageTimer, fingerprint, run_units, unit_path

DATA = "data"


def stage_version(settings: Any) -> int:
    """The ``version`` a stage's settings class declares (a bug if missing)."""
    version = getattr(type(settings), "version", None)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"{type(settings).__qualname__} declares no stage version (a class "
                        "attribute 'version: ClassVar[int] = 1')")
    return version


@dataclass(frozen=True, eq=False)
class Entry:
    """One stage of a plan. ``run(call)`` computes (or loads) the stage's result through its
    :class:`StageCall`; ``roles`` maps the stage's own model names to the method's roles
    (``{"vae": "cluster_vae"}``); ``upstream`` are the entries whose results it reads (their
    keys are part of its key). ``cached=False``: no stage folder, computed on every run (the
    selections, which have their own feature cache). ``version``: the stage's version when its
    settings class is not its own (a selection's), else the settings class's."""

    name: str
    settings: Any
    run: Callable[["StageCall"], Any]
    upstream: tuple["Entry", ...] = ()
    roles: Mapping[str, str] = field(default_factory=dict)
    cached: bool = True
    version: int | None = None

    @property
    def stage_version(self) -> int:
        return self.version if self.version is not None else stage_version(self.settings)

    def __repr__(self) -> str:
        return f"Entry({self.name!r})"


@dataclass(frozen=True, eq=False)
class Output:
    """A value a method assembles from the plan's results (``images``, ``problems``, ...):
    ``read(results)`` computes it from the entries in ``reads``."""

    read: Callable[[Any], Any]
    reads: tuple[Entry, ...] = ()

    def __call__(self, results: Any) -> Any:
        return self.read(results)


class Plan:
    """The entries of a run in order, and the named outputs a method assembles its pairs
    from."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.outputs: dict[str, Output] = {}

    def add(self, name: str, settings: Any, run: Callable[["StageCall"], Any], *,
            upstream: tuple[Entry | None, ...] = (), roles: Mapping[str, str] | None = None,
            cached: bool = True, version: int | None = None) -> Entry:
        """Append a stage; ``upstream`` entries that are None (not in this plan) are left
        out. Returns the entry, for later entries to read."""
        if any(e.name == name for e in self.entries):
            raise ValueError(f"the plan has two stages named {name!r}")
        ups = tuple(u for u in upstream if u is not None)
        for up in ups:
            if up not in self.entries:
                raise ValueError(f"{name} reads {up.name}, which is not earlier in the plan")
        if version is None:
            stage_version(settings)  # a settings class without a version is a bug: say so now
        entry = Entry(name, settings, run, ups, dict(roles or {}), cached, version)
        self.entries.append(entry)
        return entry

    def output(self, name: str, read: Callable[[Any], Any], *,
               reads: tuple[Entry | None, ...] = ()) -> Output:
        """Declare ``name`` as ``read(results)``, computed from the entries in ``reads``."""
        out = Output(read, tuple(e for e in reads if e is not None))
        self.outputs[name] = out
        return out

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def payloads(self, data_key: str) -> dict[Entry, dict[str, Any]]:
        """What every entry's key hashes (:func:`stage_payload`), in plan order."""
        keys: dict[Entry, str] = {}
        out: dict[Entry, dict[str, Any]] = {}
        for entry in self.entries:
            ups = {u.name: keys[u] for u in entry.upstream} or {DATA: data_key}
            out[entry] = stage_payload(entry, ups)
            keys[entry] = fingerprint(out[entry])
        return out

    def keys(self, data_key: str) -> dict[str, str]:
        """name -> key of every entry, without running anything."""
        return {e.name: fingerprint(p) for e, p in self.payloads(data_key).items()}

    def downstream(self, names: set[str]) -> set[str]:
        """``names`` and every entry that reads one of them, directly or not."""
        out = set(names)
        for entry in self.entries:
            if any(u.name in out for u in entry.upstream):
                out.add(entry.name)
        return out

    def roles_used(self, requires: Callable[[str], set[str]] = lambda role: {role}) -> set[str]:
        """Every model role some entry uses (with the roles its builder shares)."""
        return {r for e in self.entries for role in e.roles.values() for r in requires(role)}


def stage_payload(entry: Entry, upstream: dict[str, str]) -> dict[str, Any]:
    """What a stage's key hashes: its name, settings class and version, every settings field
    that can change its output (``gitd.settings.key_dict``), and the keys it reads."""
    from gitd.settings import key_dict

    cls = type(entry.settings)
    return {"stage": entry.name, "settings_class": cls.__qualname__,
            "version": entry.stage_version, "settings": key_dict(entry.settings),
            "upstream": dict(upstream)}


class StageCall:
    """What a stage function gets: its settings, the results of the entries it reads
    (``call[entry]``), its models by the stage's own names (``call.model("vae")``), and the way
    to compute and cache its result (``whole``, ``units``, or ``value`` for an uncached
    entry)."""

    def __init__(self, runner: "PlanRunner", entry: Entry):
        self.runner = runner
        self.entry = entry
        self.name = entry.name
        self.settings = entry.settings

    # -- inputs -----------------------------------------------------------------------------
    def __getitem__(self, entry: Entry) -> Any:
        if entry not in self.entry.upstream:
            raise KeyError(f"{self.name} reads {entry.name} but does not declare it upstream "
                           "(its key would not follow it)")
        return self.runner.results[entry]

    @property
    def dataset(self) -> Any:
        return self.runner.dataset

    def option(self, name: str, default: Any = None) -> Any:
        """A run option that is no setting (a test's feature function)."""
        return self.runner.options.get(name, default)

    # -- models -----------------------------------------------------------------------------
    def has_model(self, name: str) -> bool:
        return name in self.entry.roles

    def model(self, name: str) -> Any:
        """The model this stage calls ``name``, built on first use (``Models.get``)."""
        return self.runner.models.get(self.entry.roles[name])

    def optional_model(self, name: str) -> Any:
        """``model(name)``, or None where this plan gives the stage no such model (the /S
        ablation's score model)."""
        return self.model(name) if self.has_model(name) else None

    def model_factory(self, name: str) -> Any:
        """What another process builds the model from (``Models.factory``)."""
        return self.runner.models.factory(self.entry.roles[name])

    @property
    def device(self) -> Any:
        return self.runner.models.device

    @property
    def dtype(self) -> Any:
        return self.runner.models.dtype

    def prepare(self) -> None:
        """Build every model of the stage (before any file is created: a model that cannot be
        had fails first)."""
        for name in self.entry.roles:
            self.model(name)

    # -- computing ----------------------------------------------------------------------------
    def open(self) -> Stage:
        """The stage's folder (``Stage.open``; its models are built first unless done)."""
        return Stage.open(self.runner.work, self.name, self.runner.payloads[self.entry],
                          prepare=self.prepare)

    def whole(self, compute: Callable[[Stage], Any], load: Callable[[Stage], Any]) -> Any:
        """A stage computed in one piece; returns ``load(stage)`` (``Stage.cached``: a done
        stage whose files fail to load is recomputed). ``compute(stage)`` writes its files into
        ``stage.path`` (atomically, resuming itself where it can); ``load`` validates them."""
        stage = self.open()
        value = stage.cached(lambda: load(stage), lambda: compute(stage))
        self.runner.timings[self.name] = float(stage.summary().get("seconds", 0.0))
        return value

    def units(self, n: int, batch_size: int, compute: Callable[[range], list],
              write: Callable[[Stage, int, Any], None], load: Callable[[Stage, int], Any], *,
              noun: str = "unit", before: Callable[[], None] | None = None) -> list:
        """A stage of ``n`` units finished in fixed chunks of ``batch_size``
        (``gitd.store.run_units``); returns ``load(stage, j)`` for every unit. ``before()`` runs
        first when some unit is still missing (a check that must fail before any work)."""
        stage = self.open()
        clock = StageTimer(stage)
        on_unit = self.runner.on_unit

        def written(j: int) -> None:
            clock.save()
            if on_unit:
                on_unit(self.name, j)

        if before is not None and not all(unit_path(stage, j).exists() for j in range(n)):
            before()
        values = run_units(stage, n, batch_size, compute, lambda j, r: write(stage, j, r),
                           lambda j: load(stage, j), noun=noun, on_written=written)
        stage.mark_done({"seconds": round(clock.total(), 3)})
        self.runner.timings[self.name] = round(clock.total(), 3)
        return values

    def value(self, compute: Callable[[], Any]) -> Any:
        """An uncached stage's result: computed now, timed."""
        t0 = time.perf_counter()
        result = compute()
        self.runner.timings[self.name] = round(time.perf_counter() - t0, 3)
        return result


class Results:
    """The results of a finished plan, by entry, and the plan's outputs (``results.output(
    "images")``)."""

    def __init__(self, plan: Plan, values: dict[Entry, Any], dataset: Any):
        self.plan = plan
        self.values = values
        self.dataset = dataset

    def __getitem__(self, entry: Entry) -> Any:
        return self.values[entry]

    def output(self, name: str) -> Any:
        return self.plan.outputs[name](self)


class PlanRunner:
    """Runs a plan in a work folder (see the module docstring). ``models``: a
    ``gitd.models.roles.Models`` (``get``, ``release``, ``requires``, ``factory``, ``device``,
    ``dtype``); ``dataset``: what the stages read (``call.dataset``); ``on_unit(stage, j)``:
    called after each finished unit (tests interrupt runs with it)."""

    def __init__(self, work: str | Path | None, plan: Plan, data_key: str, models: Any, *,
                 dataset: Any = None, on_unit: Callable[[str, int], None] | None = None,
                 options: dict[str, Any] | None = None):
        self.work = Path(work) if work is not None else None
        self.plan = plan
        self.data_key = data_key
        self.models = models
        self.dataset = dataset
        self.on_unit = on_unit
        self.options = dict(options or {})
        self.payloads = plan.payloads(data_key)
        self.keys = {e: fingerprint(p) for e, p in self.payloads.items()}
        self.results: dict[Entry, Any] = {}
        self.timings: dict[str, float] = {}
        if self.work is None and any(e.cached for e in plan):
            raise ValueError("a plan with cached stages needs a work folder")

    def last_uses(self) -> dict[str, int]:
        """Role -> the index of the last entry that needs it (shared roles included)."""
        requires = getattr(self.models, "requires", lambda role: {role})
        last: dict[str, int] = {}
        for i, entry in enumerate(self.plan):
            for role in entry.roles.values():
                for r in requires(role):
                    last[r] = i
        return last

    def run(self) -> Results:
        """Run every entry in order; returns their results."""
        last = self.last_uses()
        for i, entry in enumerate(self.plan):
            call = StageCall(self, entry)
            self.results[entry] = entry.run(call)
            for role in sorted(r for r, j in last.items() if j == i):
                self.models.release(role)
        return Results(self.plan, self.results, self.dataset)

    # -- the manifest ---------------------------------------------------------------------------
    @property
    def stage_keys(self) -> dict[str, str]:
        """name -> key (the manifest's ``stages``)."""
        return {e.name: k for e, k in self.keys.items()}

    def describe(self) -> dict[str, Any]:
        """The manifest's ``plan``: per stage its key, version, settings class, and what its
        key was made of (the settings fields and the keys of the stages it read)."""
        return {e.name: {"key": self.keys[e], "version": p["version"],
                         "settings_class": p["settings_class"], "cached": e.cached,
                         "settings": p["settings"], "upstream": p["upstream"],
                         "models": dict(e.roles)}
                for e, p in self.payloads.items()}
