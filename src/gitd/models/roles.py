"""Model roles: what a method needs, built lazily from the registry, described for manifests.

A method declares its roles (``Method.roles``): role name -> :class:`Role`, i.e. a model-registry
kind plus the names of the settings fields holding the model's name and revision. :class:`Models`
builds a role on first use (a run that finds every unit cached builds nothing), shares roles a
builder asks for (the img2img pipeline reuses the VAE already built for encoding), and accepts
prebuilt models (diffusers' idea: a recipe receives its components; tests pass tiny ones).
:func:`ModelRef` is what a stage key records about a model: kind, name and revision, so a changed
revision changes every key of the stages that use the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gitd.models.registry import build, describe_model, is_untrained


@dataclass(frozen=True)
class ModelRef:
    """A model as cache keys see it. ``seed``: what a random-weight model (tiny, full-size
    random) is built from, so that its weights are part of the key; None for trained weights."""

    kind: str
    name: str
    revision: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Role:
    """One model a method uses.

    ``model`` and ``revision``: names of the settings fields holding the model name and its
    revision. ``shares``: roles passed to the builder as keyword arguments (``img2img`` gets the
    ``vae``). ``source(settings)``, where a role's model is not simply two fields (GITD's
    ``--vae`` falls back to the diffusion model's own): (name, revision, builder keyword
    arguments), instead of ``model``/``revision``. Whether a run uses a role is not declared
    here: the run's plan says (``gitd.plan.Plan.roles_used``).
    """

    kind: str
    model: str
    revision: str | None = None
    shares: tuple[str, ...] = ()
    source: Callable[[Any], tuple[str, str | None, dict[str, Any]]] | None = None

    def options(self, settings: Any) -> dict[str, Any]:
        """Extra keyword arguments for the builder (``source``'s third item)."""
        return dict(self.source(settings)[2]) if self.source is not None else {}

    def ref(self, settings: Any) -> ModelRef:
        if self.source is not None:
            name, rev, _ = self.source(settings)
        else:
            rev = getattr(settings, self.revision) if self.revision else None
            name = getattr(settings, self.model)
        seed = settings.seed if is_untrained(self.kind, name) else None
        return ModelRef(self.kind, name, rev, seed)


class Models:
    """The models of one run, by role, built on first ``get`` and released (``release``) when
    the run's executor knows no later stage needs them."""

    def __init__(self, roles: dict[str, Role], settings: Any, device: Any, dtype: Any,
                 given: dict[str, Any] | None = None):
        self.roles = roles
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self._given: dict[str, Any] = dict(given or {})
        self._built: dict[str, Any] = {}
        unknown = set(self._given) - set(roles)
        if unknown:
            raise ValueError(f"no such role(s): {', '.join(sorted(unknown))}")

    def _build_args(self, role: str) -> tuple[tuple, dict[str, Any]]:
        spec = self.roles[role]
        ref = spec.ref(self.settings)
        return (ref.kind, ref.name), {"dtype": self.dtype, "seed": self.settings.seed,
                                      "revision": ref.revision, **spec.options(self.settings)}

    def get(self, role: str) -> Any:
        if role in self._given:
            return self._given[role]
        if role not in self._built:
            args, kwargs = self._build_args(role)
            shared = {name: self.get(name) for name in self.roles[role].shares}
            self._built[role] = build(*args, device=self.device, **kwargs, **shared)
        return self._built[role]

    def requires(self, role: str) -> set[str]:
        """``role`` and every role its builder shares, directly or not."""
        out = {role}
        for name in self.roles[role].shares:
            out |= self.requires(name)
        return out

    def release(self, role: str) -> None:
        """Drop this run's reference to ``role``'s model (a later ``get`` builds it again);
        models given to the run stay with their owner."""
        model = self._built.pop(role, None)
        if model is not None and getattr(self.device, "type", None) == "cuda":
            import gc

            import torch

            del model
            gc.collect()
            torch.cuda.empty_cache()

    def factory(self, role: str) -> Any:
        """What another process (a Ray actor) builds ``role``'s model from: the model given to
        this run, or a picklable call of the model registry with the role's own name, revision
        and builder options, on this run's device type (an actor's GPU is its own ``cuda``)."""
        if role in self._given:
            return self._given[role]
        if self.roles[role].shares:
            raise ValueError(f"role {role} shares other models; it cannot be built elsewhere")
        import functools

        args, kwargs = self._build_args(role)
        return functools.partial(build, *args, device=getattr(self.device, "type", self.device),
                                 **kwargs)

    def ref(self, role: str) -> ModelRef:
        return self.roles[role].ref(self.settings)


def describe_roles(roles: dict[str, Role], settings: Any,
                   used: set[str] | None = None) -> dict[str, Any]:
    """The manifest's ``models``: per role its name, revision, source, ``untrained`` (random
    weights) and ``used`` (whether the run's plan uses it; ``used=None``: every role)."""
    out = {}
    for role, spec in roles.items():
        ref = spec.ref(settings)
        out[role] = {**describe_model(ref.kind, ref.name, ref.revision),
                     "used": used is None or role in used}
    return out


def untrained(models: dict[str, Any]) -> bool:
    """True when a used role has random weights (tiny and full-size random models alike)."""
    return any(m.get("untrained") and m.get("used", True) for m in models.values())


@dataclass(frozen=True)
class Runtime:
    """The resolved device, dtype and CPU thread count of a run. Stage keys of model stages
    record them (as ``device_type`` and ``dtype_name``): a GPU and a CPU round differently, and
    so do one and several CPU threads (``gitd.threads``)."""

    device: Any
    dtype: Any
    threads: int | None = None  # torch's CPU threads, as set by ``resolve``

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto",
                models: Iterable[str | None] | None = None) -> "Runtime":
        """``models``: the names of the models the run uses; they choose the thread count,
        which is set here. Without them the thread count is left alone (and not recorded)."""
        from gitd.models.registry import resolve_device, resolve_dtype
        from gitd.threads import use_threads

        dev = resolve_device(device)
        threads = use_threads(models) if models is not None else None
        return cls(dev, resolve_dtype(dtype, dev), threads)

    @property
    def device_type(self) -> str:
        """``cpu``, ``cuda``, ...; on a CPU with more than one thread, ``cpu-N-threads``."""
        from gitd.threads import device_key

        return device_key(self.device.type, self.threads)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype)
