"""A Ray session for gitd's per-image work (``--ray auto|local|ADDRESS``): join or start a
cluster (``connect``, which resolves ``auto`` through ``$RAY_ADDRESS``), what it holds
(``cluster_resources``), and ``map_spans``, which runs CLARA's assignment passes as Ray tasks
over spans of rows (``gitd.stages.clara.assign``'s ``mapper``). The encode pipeline on Ray Data
is ``gitd.stages.ray_encode``.

Ray is imported only here and there, and only when ``--ray`` is given.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from gitd.errors import GitdError


def import_ray():
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise GitdError("--ray needs Ray Data: pip install 'gitd[ray]' (or pip install "
                        "'ray[data]')") from None
    return ray


def connect(address: str | None = None):
    """Connect to (or start) Ray and return the module. ``address``: ``local`` starts a
    private cluster on this machine; ``auto`` (or None, or empty) takes ``$RAY_ADDRESS`` when
    set, else joins the cluster running here; anything else is a Ray address. A session already
    started in this process (``ray.init`` by the caller) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if not address or address == "auto":
        address = os.environ.get("RAY_ADDRESS") or "auto"
    try:
        if address == "local":
            ray.init(include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = " (start one with 'ray start --head', or use --ray local)" \
            if address == "auto" else ""
        raise GitdError(f"cannot connect to a Ray cluster at {address!r}{hint}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    from ray.data import DataContext

    # gitd draws its own progress bar from the finished parts.
    DataContext.get_current().enable_progress_bars = False
    return ray


def cluster_resources(ray) -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


def map_spans(fn: Callable, X, m: np.ndarray, spans: Sequence[tuple[int, int]], chunk: int,
              device) -> list:
    """``fn(X, m, a, b, chunk, device)`` for every span as Ray tasks; results in span order.
    X must pickle to a reference to its files (``ShardedRows``), not to its rows."""
    ray = import_ray()
    if not ray.is_initialized():
        raise GitdError("map_spans needs a Ray session (gitd.stages.ray_session.connect)")
    remote = ray.remote(num_cpus=1)(fn)
    x_ref, m_ref = ray.put(X), ray.put(m)
    # Tasks run on workers, which have no GPU unless the cluster gives them one.
    dev = "cpu" if str(device).startswith("cuda") and not cluster_resources(ray)[1] else device
    return ray.get([remote.remote(x_ref, m_ref, a, b, chunk, dev) for a, b in spans])
