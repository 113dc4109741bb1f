"""Model roles: what a method needs, built lazily from the registry, described for manifests.

A method declares its roles (``Method.roles``): role name -> :class:`Role`, i.e. a model-registry
kind plus the names of the settings fields holding the model's name and revision. :class:`Models`
builds a role on first use (a run that finds every unit cached builds nothing), shares roles a
builder asks for (the img2img pipeline reuses the VAE already built for encoding), and accepts
prebuilt models (diffusers' idea: a recipe receives its components; tests pass tiny ones).
:func:`ModelRef` is what a stage key records about a model: kind, name and revision, so a changed
revision changes every key of the stages that use the model.

Memory: a run holds a model only while a stage still needs it. The run's executor
(``gitd.plan.PlanRunner``) releases each role after the last stage that needs it, a role shared
by another one (the VAE of the img2img pipeline) after the last stage of either;
:meth:`Models.release` drops the model and gives its memory back
(``gitd.models.gpu.release_memory``). The large kinds are placed on a CUDA GPU under the run's
``offload`` mode (``gitd.models.offload``); ``auto`` decides per role from the GPU's free memory,
what the role needs and what the other models of its stages (``stage_roles``) will need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from gitd.log import get_logger
from gitd.models.registry import build, describe_model, is_untrained

log = get_logger("gitd.models")


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
    the run's executor knows no later stage needs them.

    ``offload`` (``gitd.models.offload.OFFLOAD_MODES``) places the large kinds on a CUDA
    device; ``stage_roles`` (the roles of each stage of the run's plan) tells ``auto`` offload
    which other models share a stage with the one being placed."""

    def __init__(self, roles: dict[str, Role], settings: Any, device: Any, dtype: Any,
                 given: dict[str, Any] | None = None, *, offload: str = "none",
                 stage_roles: Iterable[Iterable[str]] = ()):
        self.roles = roles
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.stage_roles = [frozenset(rs) for rs in stage_roles]
        self._given: dict[str, Any] = dict(given or {})
        self._built: dict[str, Any] = {}
        # role -> the offload mode it was placed with (large kinds on CUDA only)
        self.placement: dict[str, str] = {}
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
            offload = self._offloads(self.roles[role].kind)
            model = build(*args, device=torch.device("cpu") if offload else self.device,
                          **kwargs, **shared)
            if offload:
                model = self._place(role, self.roles[role].kind, model)
            self._built[role] = model
        return self._built[role]

    def built(self) -> list[str]:
        """The roles this run built and holds now (models given to it are not counted)."""
        return list(self._built)

    def requires(self, role: str) -> set[str]:
        """``role`` and every role its builder shares, directly or not."""
        out = {role}
        for name in self.roles[role].shares:
            out |= self.requires(name)
        return out

    def release(self, role: str) -> bool:
        """Drop this run's reference to ``role``'s model and give its memory back
        (``gc.collect`` and, on CUDA, ``torch.cuda.empty_cache``); a later ``get`` builds it
        again. Models given to the run stay with their owner. Returns False when the role was
        not built. Memory a model shares with a role still held (the img2img pipeline's VAE) is
        freed with the last of them."""
        from gitd.models.gpu import release_memory

        if role not in self._built:
            return False
        model = self._built.pop(role)
        self.placement.pop(role, None)
        del model
        release_memory(self.device)
        log.debug("released %s", role)
        return True

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

    # -- offload -------------------------------------------------------------------------
    def _offloads(self, kind: str) -> bool:
        """Whether a model of ``kind`` is built on the CPU and then placed by offload."""
        from gitd.models.offload import OFFLOADABLE

        return (kind in OFFLOADABLE and self.offload != "none"
                and torch.device(self.device).type == "cuda")

    def _others(self, role: str) -> int:
        """Estimated bytes of the models that share a stage with ``role`` and are not built
        yet (with the roles they share)."""
        from gitd.models.offload import estimate_bytes

        others = {r for group in self.stage_roles if role in group
                  for name in group for r in self.requires(name)} - self.requires(role)
        total = 0
        for other in sorted(others - set(self._built) - set(self._given)):
            ref = self.ref(other)
            total += estimate_bytes(ref.kind, ref.name, self.dtype)
        return total

    def _place(self, role: str, kind: str, model: Any) -> Any:
        from gitd.models import offload as off
        from gitd.models.gpu import free_memory, release_memory

        release_memory(self.device)
        need = off.Need(weights=sum(off.module_bytes(p) for p in off.components(model)),
                        largest=off.largest_part(model),
                        activations=int(off.ACTIVATION_BYTES.get(kind, off.GIB)),
                        others=self._others(role))
        free = free_memory(self.device)
        mode = off.choose_offload(self.offload, free, need)
        log.info("%s: offload %s (%s; %.1f GiB free)", role, mode, off.describe_need(need),
                 (free or 0) / off.GIB)
        self.placement[role] = mode
        return off.apply_offload(model, kind, mode, torch.device(self.device),
                                 budget=off.gpu_budget(mode, free or 0, need))


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
        runtime = cls(dev, resolve_dtype(dtype, dev), threads)
        if runtime.dtype == torch.bfloat16 and dev.type == "cuda":
            from gitd.models.gpu import bf16_native

            if not bf16_native(dev):
                log.warning("this GPU computes bfloat16 only by emulation (slow; cuDNN has no "
                            "bf16 convolutions there): --dtype float16 is the faster choice")
        return runtime

    @property
    def device_type(self) -> str:
        """``cpu``, ``cuda``, ...; on a CPU with more than one thread, ``cpu-N-threads``."""
        from gitd.threads import device_key

        return device_key(self.device.type, self.threads)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype)
