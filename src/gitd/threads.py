"""How many CPU threads torch computes with, chosen from the work (``--threads N`` overrides).

The rule, from measurements on the project's shared 2-core machine (docs/benchmarks.md,
"CPU threads"): the tiny stand-in models (``gitd.models.tiny``: every op a small matrix product)
run several times *slower* with more than one thread, because starting and synchronising OpenMP
threads costs more than the product itself, and a thread that spin-waits for a core another
process holds costs more still (the tiny distillation: 2.8 s on one thread, 19.7 s on two). So a
run whose models are all tiny stand-ins computes on one thread; any other run keeps torch's own
default (one thread per core), where real models' large products gain from them.

On a CPU the thread count changes the order of floating-point reductions and so the last bits of
results (the tiny distillation's images differ between one and two threads; the same count gives
the same bytes). A run therefore records its count in its stage keys (``Runtime.device_type``),
so a resumed or cached run never mixes units computed with different counts.

``--threads N`` is passed on through the ``GITD_THREADS`` environment variable, so processes a
command starts (``accelerate launch`` for ``finetune``, Ray workers) use it too.
"""

from __future__ import annotations

import os
from typing import Iterable

ENV = "GITD_THREADS"
_torch_default: list[int] = []  # torch's own count, before gitd first changed it


def is_tiny(name: str | None) -> bool:
    """Whether ``name`` is one of the tiny random-weight stand-ins (``tiny``, ``tiny-sd``,
    ``tiny-clip``, ``tiny-blip``, ``tiny-llava``, ``tiny-unclip``)."""
    return isinstance(name, str) and (name == "tiny" or name.startswith("tiny-"))


def requested_threads() -> int | None:
    """The count given with ``--threads`` (or ``GITD_THREADS``), else None."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        from gitd.errors import ConfigError

        raise ConfigError(f"{ENV}={text!r}: must be a whole number of threads >= 1")
    return n


def request_threads(n: int) -> None:
    """``--threads N``: use ``n`` threads in this process and in those it starts."""
    os.environ[ENV] = str(int(n))
    _apply(int(n))


def threads_for(models: Iterable[str | None]) -> int:
    """The thread count for a run using ``models`` (names; None for an unused role)."""
    n = requested_threads()
    if n is not None:
        return n
    names = [m for m in models if m is not None]
    if names and all(is_tiny(m) for m in names):
        return 1
    return _default()


def use_threads(models: Iterable[str | None]) -> int:
    """Set torch's thread count for a run using ``models``; returns it."""
    n = threads_for(models)
    _apply(n)
    return n


def device_key(device_type: str, threads: int | None) -> str:
    """How cache keys name where a result was computed: the device type, and on a CPU with
    more than one thread, the count (``cpu-2-threads``); one thread is plain ``cpu``."""
    if device_type == "cpu" and threads is not None and threads > 1:
        return f"cpu-{threads}-threads"
    return device_type


def current_device_key(device) -> str:
    """``device_key`` of ``device`` (a torch device or its name) with torch's current count."""
    import torch

    return device_key(torch.device(device).type, torch.get_num_threads())


def _default() -> int:
    import torch

    if not _torch_default:
        _torch_default.append(torch.get_num_threads())
    return _torch_default[0]


def _apply(n: int) -> None:
    import torch

    _default()  # remember torch's own count before changing it
    if torch.get_num_threads() != n:
        from gitd.log import get_logger

        why = ("" if n != 1 or requested_threads() else
               " (the models are tiny stand-ins, fastest on one thread; --threads N to change)")
        get_logger("threads").info("computing on %d CPU thread(s)%s", n, why)
        torch.set_num_threads(n)
