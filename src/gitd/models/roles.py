"""Model roles: what a method needs, built lazily from the registry, described for manifests.

A method declares its roles (``Method.roles``): role name -> :class:`Role`, i.e. a model-registry
kind plus the names of the settings fields holding the model's name and revision. :class:`Models`
builds a role on first use (a run that finds every unit cached builds nothing), shares roles a
builder asks for (the img2img pipeline reuses the VAE already built for encoding), and accepts
prebuilt models (diffusers' idea: a recipe receives its components; tests pass tiny ones).
:func:`ModelRef` is what a stage key records about a model: kind, name and revision, so a changed
revision changes every key of the stages that use the model.

Memory: a run holds a model only while a stage still needs it. A method says which roles each
stage uses (``uses``: stage name -> roles); after a stage, :meth:`Models.release_after` drops
every built role no later stage of the plan uses (:func:`roles_needed_after`) and gives the
memory back (``gitd.models.gpu.release_memory``). The large kinds are placed on the GPU under
the run's ``offload`` mode (``gitd.models.offload``); ``auto`` decides per role from the
GPU's free memory and what the role's stages need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

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
    ``vae``). ``used(settings)``: whether these settings use the role at all (ablations); the
    manifest says so, and ``untrained`` only counts roles that are used. ``source(settings)``,
    where a role's model is not simply two fields (GITD's ``--vae`` falls back to the diffusion
    model's own): (name, revision, builder keyword arguments), instead of ``model``/``revision``.
    """

    kind: str
    model: str
    revision: str | None = None
    shares: tuple[str, ...] = ()
    used: Callable[[Any], bool] | None = None
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

    def is_used(self, settings: Any) -> bool:
        return True if self.used is None else bool(self.used(settings))


def roles_needed_after(stage: str, order: Sequence[str],
                       uses: Mapping[str, Iterable[str]],
                       roles: Mapping[str, Role] | None = None) -> set[str]:
    """The roles that the stages after ``stage`` in ``order`` use (``uses``: stage -> roles),
    with the roles those share (``Role.shares``: an img2img pipeline built later takes the VAE
    already built). A ``stage`` not in ``order`` keeps every role any stage uses."""
    later = list(order)[list(order).index(stage) + 1:] if stage in order else list(order)
    needed = {r for name in later for r in uses.get(name, ())}
    stack = list(needed)
    while stack and roles:
        spec = roles.get(stack.pop())
        for shared in (spec.shares if spec else ()):
            if shared not in needed:
                needed.add(shared)
                stack.append(shared)
    return needed


class Models:
    """The models of one run, by role, built on first ``get`` and dropped by ``release``.

    ``offload`` (``gitd.models.offload.OFFLOAD_MODES``) places the large kinds on a CUDA
    device; ``uses`` (stage -> roles) tells ``release_after`` what later stages need and
    ``auto`` offload which other roles share a stage with the one being built."""

    def __init__(self, roles: dict[str, Role], settings: Any, device: Any, dtype: Any,
                 given: dict[str, Any] | None = None, *, offload: str = "none",
                 uses: Mapping[str, Iterable[str]] | None = None):
        self.roles = roles
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.uses = {stage: tuple(rs) for stage, rs in (uses or {}).items()}
        self._given: dict[str, Any] = dict(given or {})
        self._built: dict[str, Any] = dict(self._given)
        # role -> the offload mode it was placed with (large kinds on CUDA only)
        self.placement: dict[str, str] = {}
        unknown = set(self._built) - set(roles)
        if unknown:
            raise ValueError(f"no such role(s): {', '.join(sorted(unknown))}")

    def get(self, role: str) -> Any:
        if role not in self._built:
            if role in self._given:
                self._built[role] = self._given[role]
                return self._built[role]
            spec = self.roles[role]
            ref = spec.ref(self.settings)
            shared = {name: self.get(name) for name in spec.shares}
            offload = self._offloads(spec.kind)
            model = build(ref.kind, ref.name, device=torch.device("cpu") if offload else
                          self.device, dtype=self.dtype, seed=self.settings.seed,
                          revision=ref.revision, **shared, **spec.options(self.settings))
            if offload:
                model = self._place(role, spec.kind, model)
            self._built[role] = model
        return self._built[role]

    def built(self) -> list[str]:
        """The roles held now."""
        return list(self._built)

    def release(self, role: str) -> bool:
        """Drop the role's model and give its memory back (``gc.collect`` and, on CUDA,
        ``torch.cuda.empty_cache``); a later ``get`` builds it again. Returns False when the
        role was not built. Memory a model shares with a role still held (the img2img
        pipeline's VAE) is freed with the last of them."""
        from gitd.models.gpu import release_memory

        if role not in self._built:
            return False
        model = self._built.pop(role)
        self.placement.pop(role, None)
        del model
        release_memory(self.device)
        return True

    def release_after(self, stage: str, order: Sequence[str]) -> list[str]:
        """After ``stage`` of a run whose stages run in ``order``: release every built role no
        later stage uses (``uses``); returns the released roles."""
        needed = roles_needed_after(stage, order, self.uses, self.roles)
        dropped = [r for r in list(self._built) if r not in needed]
        for role in dropped:
            self.release(role)
        if dropped:
            log.debug("released %s after stage %s", ", ".join(dropped), stage)
        return dropped

    def ref(self, role: str) -> ModelRef:
        return self.roles[role].ref(self.settings)

    # -- offload -------------------------------------------------------------------------
    def _offloads(self, kind: str) -> bool:
        """Whether a model of ``kind`` is built on the CPU and then placed by offload."""
        from gitd.models.offload import OFFLOADABLE

        return (kind in OFFLOADABLE and self.offload != "none"
                and torch.device(self.device).type == "cuda")

    def _others(self, role: str) -> int:
        """Estimated bytes of the roles that share a stage with ``role`` and are not built."""
        from gitd.models.offload import estimate_bytes

        others = {r for rs in self.uses.values() if role in rs for r in rs} - {role}
        total = 0
        for other in sorted(others - set(self._built)):
            spec = self.roles.get(other)
            if spec is not None and spec.is_used(self.settings):
                ref = spec.ref(self.settings)
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


def describe_roles(roles: dict[str, Role], settings: Any) -> dict[str, Any]:
    """The manifest's ``models``: per role its name, revision, source, ``untrained`` (random
    weights) and ``used`` (False where the settings switch the role off)."""
    out = {}
    for role, spec in roles.items():
        ref = spec.ref(settings)
        out[role] = {**describe_model(ref.kind, ref.name, ref.revision),
                     "used": spec.is_used(settings)}
    return out


def untrained(models: dict[str, Any]) -> bool:
    """True when a used role has random weights (tiny and full-size random models alike)."""
    return any(m.get("untrained") and m.get("used", True) for m in models.values())


__all__ = ["ModelRef", "Models", "Role", "Runtime", "describe_roles", "roles_needed_after",
           "untrained"]


@dataclass(frozen=True)
class Runtime:
    """The resolved device and dtype of a run. Stage keys of model stages record both (as
    ``device_type`` and ``dtype_name``): a GPU and a CPU round differently."""

    device: Any
    dtype: Any

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto") -> "Runtime":
        from gitd.models.registry import resolve_device, resolve_dtype

        dev = resolve_device(device)
        runtime = cls(dev, resolve_dtype(dtype, dev))
        if runtime.dtype == torch.bfloat16 and dev.type == "cuda":
            from gitd.models.gpu import bf16_native

            if not bf16_native(dev):
                log.warning("this GPU computes bfloat16 only by emulation (slow; cuDNN has no "
                            "bf16 convolutions there): --dtype float16 is the faster choice")
        return runtime

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return str(self.dtype)
