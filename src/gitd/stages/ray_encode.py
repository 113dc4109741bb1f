"""The encode stage on a Ray cluster (``--ray auto|local|ADDRESS``), with the single-process
results to the bit.

It is a Ray Data pipeline over *parts* of ``shard_rows`` consecutive rows (a multiple of the
encode batch size): ``from_items`` (one row per unfinished part, carrying its image references)
-> ``map`` (CPU tasks: open and decode each image through ``gitd.data.images.open_rgb``, resize
and crop to uint8) -> ``map_batches`` on an actor pool (one actor per GPU, or CPU actors when the
cluster has none) that encodes the part in the same fixed batches as the in-process encoder
(``gitd.stages.vae_encoding.encode_batch``) and writes ``parts/NNNNN.npy`` then
``parts/NNNNN.json`` atomically. A finished part is the unit of resume: a re-run after the
driver or a worker was killed encodes only the parts whose ``.json`` is missing, and Ray itself
restarts a killed actor and retries its part (Ray Data's actor pools default to ``max_restarts=-1``,
``max_task_retries=-1``). Only small summaries come back to the driver.

The parts' files are ``gitd.stages.latent_folder``'s sharded layout; joining the cluster is
``gitd.stages.ray_session``'s. Ray is imported only when ``--ray`` is given.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gitd.errors import ConfigError, DataError, GitdError
from gitd.log import get_logger, progress
from gitd.stages.latent_folder import (INDEX, PARTS, LatentStore, index_settings, part_done,
                                       part_path, parts_state)
from gitd.stages.ray_session import cluster_resources, connect
from gitd.store import atomic_write_bytes, atomic_write_json, read_json

# No torch at module level (nor gitd.stages.vae_encoding, which imports it): the decode tasks
# import this module to run ``_decode_part`` and need PIL and numpy only.

log = get_logger("stages.ray_encode")

# Pixels of one part that travel through the object store (uint8): parts are sized to this.
_PART_BYTES = 64 << 20
_MAX_PART_ROWS = 1024


def part_rows(resolution: int, batch_size: int) -> int:
    """Rows per part: about ``_PART_BYTES`` of uint8 pixels, a multiple of ``batch_size`` so a
    part's batches are exactly the in-process encoder's."""
    rows = max(1, min(_MAX_PART_ROWS, _PART_BYTES // (3 * resolution * resolution)))
    return max(batch_size, rows // batch_size * batch_size)


def _ref_payload(record, i: int) -> list:
    img = record.image
    if hasattr(img, "shard"):
        return [str(img.shard), img.name, img.offset, img.size, record.row, record.id, i]
    return [str(img), None, -1, -1, record.row, record.id, i]


def _ref_of(payload: list):
    path, name, offset, size = payload[:4]
    if name is None:
        return Path(path)
    from gitd.data.shards import TarMember

    return TarMember(Path(path), name, int(offset), int(size))


def _decode_part(row: dict[str, Any], resolution: int) -> dict[str, Any]:
    """CPU task: every image of one part opened, decoded, resized and cropped (uint8). Needs
    PIL and numpy only: a decode worker never imports torch."""
    from gitd.data.images import load_pixels

    refs = json.loads(row["refs"])
    pixels = np.zeros((len(refs), resolution, resolution, 3), dtype=np.uint8)
    ok = np.zeros(len(refs), dtype=bool)
    problems = []
    for j, payload in enumerate(refs):
        ref = _ref_of(payload)
        arr, kind, message = load_pixels(ref, resolution)
        if arr is None:
            problems.append({"file": str(ref), "row": payload[4], "kind": kind,
                             "problem": message, "index": payload[6], "id": payload[5]})
        else:
            pixels[j], ok[j] = arr, True
    return {"part": row["part"], "start": row["start"], "pixels": pixels, "ok": ok,
            "problems": json.dumps(problems)}


class _Encoder:
    """Actor: builds the VAE once, then encodes whole parts and writes each one atomically."""

    def __init__(self, vae, out_dir: str, row_shape: tuple, scaling: float, batch_size: int,
                 sample: bool, seed: int, dtype: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        if callable(vae) and not isinstance(vae, torch.nn.Module):
            vae = vae()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = getattr(torch, dtype)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.out_dir = Path(out_dir)
        self.row_shape = tuple(row_shape)
        self.scaling = scaling
        self.batch_size = batch_size
        self.sample = sample
        self.seed = seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from gitd.stages.vae_encoding import encode_batch, to_input

        done = []
        for part, start, pixels, ok, problems in zip(batch["part"], batch["start"],
                                                     batch["pixels"], batch["ok"],
                                                     batch["problems"]):
            part, start = int(part), int(start)
            m = len(ok)
            lat = np.zeros((m, *self.row_shape), dtype=np.float16)
            for lo in range(0, m, self.batch_size):
                hi = min(m, lo + self.batch_size)
                # torch.stack of per-image tensors, as the DataLoader's collate builds a batch.
                x = torch.stack([to_input(p) for p in pixels[lo:hi]])
                lat[lo:hi] = encode_batch(self.vae, x, np.asarray(ok[lo:hi], dtype=bool),
                                          np.arange(start + lo, start + hi), self.row_shape,
                                          sample=self.sample, seed=self.seed,
                                          device=self.device, dtype=self.dtype)
            buf = io.BytesIO()
            np.save(buf, lat, allow_pickle=False)
            atomic_write_bytes(part_path(self.out_dir, part, ".npy"), buf.getvalue())
            probs = json.loads(problems)
            atomic_write_json(part_path(self.out_dir, part, ".json"), {
                "start": start, "stop": start + m,
                "invalid": [start + int(j) for j in np.flatnonzero(~np.asarray(ok, bool))],
                "problems": probs})
            done.append((part, m))
        return {"part": np.asarray([d[0] for d in done], dtype=np.int64),
                "rows": np.asarray([d[1] for d in done], dtype=np.int64)}


def encode_latents_ray(records: Sequence, vae, out_dir: str | Path, *, resolution: int = 512,
                       batch_size: int = 8, sample: bool = False, seed: int = 0,
                       dtype=None, workers: int | None = None, shard_rows: int | None = None,
                       address: str | None = None):
    """``gitd.stages.encode.encode_latents`` on Ray: the same latents, bit for bit, as parts.

    ``vae``: the model (shipped to the actors through the object store) or a zero-argument
    callable that builds it (called once in each actor, and once here for its config).
    ``workers``: encoder actors (default: one per GPU of the cluster, or half its CPUs).
    ``shard_rows``: rows per part (default ``part_rows``); a multiple of ``batch_size``.
    Returns a ``LatentStore`` over the parts.
    """
    import torch

    from gitd.stages.vae_encoding import latent_scale, latent_shape

    from gitd.settings import Interval, check

    check("resolution", resolution, Interval(int, 1, None))
    check("batch_size", batch_size, Interval(int, 1, None))
    check("ray workers", workers, Interval(int, 1, None), optional=True)
    records = list(records)
    n = len(records)
    if n == 0:
        raise DataError("no images to encode (the dataset has no valid records)")
    dtype = dtype or torch.float32
    model = vae() if callable(vae) and not isinstance(vae, torch.nn.Module) else vae
    row_shape = latent_shape(model, resolution)
    scaling = latent_scale(model)  # recorded in index.json; applied inside encode_batch
    settings = index_settings(records, model, resolution, sample, seed, (n, *row_shape))
    rows = shard_rows or part_rows(resolution, batch_size)
    if rows % batch_size:
        raise ConfigError(f"shard_rows ({rows}) must be a multiple of the encode batch size "
                          f"({batch_size}), so that batches are the in-process encoder's")
    out_dir = Path(out_dir)
    index = read_json(out_dir / PARTS / INDEX)
    if not (isinstance(index, dict) and index.get("settings") == settings
            and index.get("shard_rows") == rows):
        if isinstance(index, dict):
            log.info("encode: %s holds parts made with other records or settings; encoding "
                     "again", out_dir / PARTS)
        index = {"ids": [r.id for r in records], "shape": [n, *row_shape], "dtype": "float16",
                 "scaling_factor": scaling, "settings": settings, "shard_rows": rows}
        for old in (out_dir / PARTS).glob("*.json") if (out_dir / PARTS).is_dir() else ():
            old.unlink()  # our own parts of another run: none of them may be trusted now
        atomic_write_json(out_dir / PARTS / INDEX, index)
    n_parts = -(-n // rows)
    todo = [s for s in range(n_parts) if part_done(out_dir, index, s) is None]
    if len(todo) < n_parts:
        log.info("encode: %d of %d parts already done, not redone", n_parts - len(todo), n_parts)
    if todo:
        ray = connect(address)
        cpus, gpus = cluster_resources(ray)
        # A killed actor is restarted and its part retried: Ray Data's actor pools default to
        # max_restarts=-1 and max_task_retries=-1 (tests/stages/test_stage_ray_encode.py kills one).
        if gpus >= 1:
            actors = workers or int(gpus)
            actor_res = {"num_gpus": 1, "num_cpus": 1}
            threads = None
        else:
            actors = workers or max(1, int(cpus) // 2)
            # Logical CPUs only: half the cluster for the encoders, the rest for decoding.
            share = max(0.25, (cpus / 2) / actors)
            actor_res = {"num_cpus": share}
            # On a CPU the intra-op thread count changes the low bits of a convolution
            # (measured: 1 vs 2 threads differ by up to 3e-5 in the float16 latents), so the
            # actors use this process's count, and give its bytes, not their CPU share's.
            threads = torch.get_num_threads()
        items = [{"part": s, "start": s * rows,
                  "refs": json.dumps([_ref_payload(records[i], i)
                                      for i in range(s * rows, min(n, (s + 1) * rows))])}
                 for s in todo]
        from ray.data import ActorPoolStrategy, from_items

        ds = from_items(items, override_num_blocks=len(items))
        # The decode task's memory is its part's pixels plus PIL's working copies; declaring it
        # also keeps Ray from fusing decoding into the encoder actors (different resources),
        # which would put decoding behind encoding on one process.
        ds = ds.map(_decode_part, fn_kwargs={"resolution": resolution}, num_cpus=1,
                    memory=4 * rows * 3 * resolution * resolution)
        ds = ds.map_batches(
            _Encoder, batch_size=1, compute=ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"vae": vae, "out_dir": str(out_dir), "row_shape": row_shape,
                                   "scaling": scaling, "batch_size": batch_size,
                                   "sample": sample, "seed": seed,
                                   "dtype": str(dtype).removeprefix("torch."),
                                   "threads": threads},
            **actor_res)
        log.info("encode: %d parts of %d rows on Ray (%d encoder actors, %g CPUs, %g GPUs)",
                 len(todo), rows, actors, cpus, gpus)
        bar = progress(desc="encode (ray)", total=n, unit="img")
        bar.update(n - sum(min(n, (s + 1) * rows) - s * rows for s in todo))
        try:
            for row in ds.iter_rows():
                bar.update(int(row["rows"]))
        finally:
            bar.close()
    store = LatentStore(out_dir, index, parts_state(out_dir, index))
    if not store.complete:
        raise GitdError(f"{out_dir}: Ray finished but some parts are missing; re-run the same "
                        "command to encode them")
    if store.problems:
        log.warning("encode: %d of %d images could not be used (see %s/*.json)",
                    len(store.problems), n, out_dir / PARTS)
    if not store.valid.any():
        raise DataError(f"none of the {n} images could be opened; first problem: "
                        f"{store.problems[0]}")
    return store
