"""The ``cluster`` stage: the medoids of a method's rows (CLARA, or random for the /C ablation),
cached as ``medoids.json`` in the stage folder. The algorithm is ``gitd.stages.clara``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from gitd.errors import ConfigError
from gitd.settings import Text, setting
from gitd.stages.clara import clara, random_medoids
from gitd.store import atomic_write_json, read_json, require


@dataclass(frozen=True)
class ClusterSettings:
    """Everything the medoids depend on besides the upstream rows (the ``cluster`` key)."""

    version: ClassVar[int] = 1  # bump when a change alters the medoids this stage picks

    k: int
    method: str  # "clara" or "random" (the /C ablation)
    n_samples: int | None  # CLARA draws; None: the default of ``clara``
    sample_size: int | None
    seed: int
    device: str
    # Assignment passes as Ray tasks give the same chunks, the same sums in the same order and so
    # the same medoids and cost (tests/stages/test_stage_ray_encode.py): not part of the key.
    ray: str | None = setting(None, Text(empty=True), "Ray address for the assignment passes; "
                              "None: in this process", optional=True, affects_results=False,
                              cli=False)


def cluster_stage(call, matrix: Callable[[], Any], valid: np.ndarray,
                  ids: Sequence[str]) -> dict[str, Any]:
    """Run (or reuse) a cluster stage (``call``: its ``gitd.plan.StageCall``): ``matrix()``
    gives the rows to cluster (valid rows only) or None to draw random medoids over
    ``len(valid)`` rows without data; ``valid`` maps those rows to dataset indices. Returns the
    cached result (``medoids.json``). Asking for more medoids than there are usable rows (images
    that could not be read) is one line, before anything is written."""
    st: ClusterSettings = call.settings
    device = call.device
    if st.k > len(valid):
        raise ConfigError(f"asked for {st.k} pairs but only {len(valid)} images could be read")

    def result_path(stage) -> Path:
        return stage.path / "medoids.json"

    def compute(stage) -> None:
        X = matrix()
        if st.method == "clara":
            extra = {} if st.n_samples is None else {"n_samples": st.n_samples}
            if st.ray is not None:
                # Each task reads its own rows from the latent files (``matrix()`` must then be
                # a ``ShardedRows``-backed one: ``LatentStore.matrix(files=True)``).
                from gitd.stages.ray_session import connect, map_spans

                connect(st.ray)
                extra["mapper"] = map_spans
            res = clara(X, st.k, sample_size=st.sample_size, seed=st.seed, device=device,
                        **extra)
        else:
            res = random_medoids(X if X is not None else len(valid), st.k, seed=st.seed)
        rows = [int(valid[i]) for i in res.medoids]
        cost = float(res.cost)
        atomic_write_json(result_path(stage), {
            "medoids": rows,
            "ids": [ids[i] for i in rows],
            "sizes": ([int(s) for s in res.sizes] if res.sizes is not None else [1] * len(rows)),
            "cost": None if cost != cost else cost,  # NaN when there was nothing to measure
            "method": st.method,
            "sample_size": res.sample_size,
            "sample_costs": [float(c) for c in (res.sample_costs or [])],
        })

    usable = set(int(v) for v in valid)

    def load(stage) -> dict[str, Any]:
        res = read_json(result_path(stage))
        require(isinstance(res, dict), "medoids.json is missing or not a JSON object")
        rows, sizes = res["medoids"], res["sizes"]
        require(isinstance(rows, list) and len(rows) == st.k and all(r in usable for r in rows),
                f"medoids.json does not hold {st.k} usable rows")
        require(isinstance(sizes, list) and len(sizes) == len(rows)
                and all(isinstance(x, int) for x in sizes), "medoids.json has bad sizes")
        require(res["ids"] == [ids[r] for r in rows],
                "medoids.json names other images than the dataset's")
        return res

    return call.whole(compute, load)
