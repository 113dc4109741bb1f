"""The encode stage: every image through the VAE into a resumable float16 latent folder
(``gitd.stages.latent_folder`` says what it holds), in this process or on Ray.

Images are opened in DataLoader workers; an image that cannot be opened becomes a ``Problem``
and its row is marked invalid (left as zeros) instead of stopping the run. After each batch its
rows are flushed to disk and only then is ``progress.json`` replaced (atomically), so a killed
run resumes from the last finished batch, and resident memory stays one batch whatever n is.
The file's disk space is reserved when it is created, so a full disk is one line at the start.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from gitd.data.images import image_ref, load_pixels
from gitd.data.records import Record
from gitd.errors import DataError, environment_error
from gitd.log import get_logger, progress
from gitd.models.roles import ModelRef
from gitd.settings import Interval, Text, check, setting
from gitd.stages.arrays import create_array_file, npy_header, npy_ok
from gitd.stages.latent_folder import (INDEX, LATENTS, PROGRESS, LatentStore, index_settings,
                                       read_progress)
from gitd.stages.vae_encoding import (check_can_sample, encode_batch, latent_scale, latent_shape,
                                      to_input)
from gitd.store import atomic_write_json, read_json
from gitd.workers import loader_batches

log = get_logger("stages.encode")


class _ImageDataset(torch.utils.data.Dataset):
    """Item i: (index, image tensor, ok, problem kind, problem message); a bad image gives
    zeros and ok False (``load_pixels``)."""

    def __init__(self, paths: Sequence, resolution: int, start: int):
        self.paths = list(paths)
        self.resolution = resolution
        self.start = start

    def __len__(self) -> int:
        return len(self.paths) - self.start

    def __getitem__(self, j: int):
        i = self.start + j
        arr, kind, message = load_pixels(self.paths[i], self.resolution)
        if arr is None:
            return i, torch.zeros(3, self.resolution, self.resolution), False, kind, message
        return i, to_input(arr), True, "", ""


def encode_latents(records: Sequence[Record], vae, out_dir: str | Path, *, resolution: int = 512,
                   batch_size: int = 8, num_workers: int = 2, sample: bool = False,
                   seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
                   max_batches: int | None = None,
                   on_batch: Callable[[int, int], None] | None = None) -> LatentStore:
    """Encode ``records`` with ``vae`` (``AutoencoderKL`` or ``AutoencoderTiny``) into ``out_dir``.

    Latent = ``vae_latents``: the posterior mean (deterministic), or with ``sample=True`` a draw
    seeded by ``seed`` and the row's index, on SD's scaled range. Resumes a folder left by an
    interrupted run with the same records and settings; a folder made with different ones is
    started again.
    ``max_batches`` stops after that many batches in this call (time-sliced runs);
    ``on_batch(batch_number, rows_done)`` is called after each batch is safely on disk.
    """
    check("resolution", resolution, Interval(int, 1, None))
    check("batch_size", batch_size, Interval(int, 1, None))
    check("num_workers", num_workers, Interval(int, 0, None))
    check("max_batches", max_batches, Interval(int, 0, None), optional=True)
    records = list(records)
    n = len(records)
    if n == 0:
        raise DataError("no images to encode (the dataset has no valid records)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (n, *latent_shape(vae, resolution))
    scaling = latent_scale(vae)
    if sample:
        check_can_sample(vae)
    settings = index_settings(records, vae, resolution, sample, seed, shape)

    index = read_json(out_dir / INDEX)
    state = read_progress(out_dir / PROGRESS, n)
    fresh = not (isinstance(index, dict) and index.get("settings") == settings
                 and npy_ok(out_dir / LATENTS, np.float16, shape))
    if fresh:
        if isinstance(index, dict) and index.get("settings") != settings:
            log.info("encode: %s holds latents made with other records or settings; "
                     "encoding again", out_dir)
        elif isinstance(index, dict):
            log.warning("encode: %s is missing or damaged in %s; encoding again", LATENTS,
                        out_dir)
        (out_dir / PROGRESS).unlink(missing_ok=True)
        create_array_file(out_dir / LATENTS, np.float16, shape)
        index = {"ids": [r.id for r in records], "shape": list(shape), "dtype": "float16",
                 "scaling_factor": scaling, "settings": settings}
        atomic_write_json(out_dir / INDEX, index)
        state = {}
    done = int(state.get("rows_done", 0))
    # Batches are fixed index ranges, so a resumed run encodes exactly the batches an
    # uninterrupted one would and the file comes out identical.
    done -= done % batch_size if done < n else 0
    invalid = [i for i in state.get("invalid", []) if i < done]
    problems = [p for p in state.get("problems", []) if p.get("index", 0) < done]
    if done >= n:
        return LatentStore(out_dir, index, state)
    if done:
        log.info("encode: resuming at image %d of %d", done, n)

    header = npy_header(out_dir / LATENTS).offset
    row_bytes = int(np.prod(shape[1:])) * 2
    ds = _ImageDataset([image_ref(r.image) for r in records], resolution, done)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, drop_last=False)
    dev = torch.device(device)
    vae_dtype = next(vae.parameters()).dtype
    if vae_dtype != dtype:
        log.debug("encode: VAE is %s, casting inputs to %s", vae_dtype, dtype)
    total_batches = -(-(n - done) // batch_size)
    bar = progress(desc="encode", total=n, unit="img")
    bar.update(done)
    t0 = time.perf_counter()
    ran = 0
    try:
        for idx, x, ok, kinds, messages in loader_batches(
                loader, "re-run with --encode-workers 0 to find the file that crashes it"):
            if max_batches is not None and ran >= max_batches:
                break
            idx = idx.numpy()
            ok = ok.numpy().astype(bool)
            a, b = int(idx[0]), int(idx[-1]) + 1
            lat = encode_batch(vae, x, ok, idx, shape[1:], sample=sample, seed=seed,
                               device=dev, dtype=dtype)
            for j in np.flatnonzero(~ok):
                r = records[idx[j]]
                invalid.append(int(idx[j]))
                problems.append({"file": str(r.image), "row": r.row, "kind": kinds[j],
                                 "problem": messages[j], "index": int(idx[j]), "id": r.id})
                log.warning("encode: %s: %s (skipped)", r.image, messages[j])
            _write_rows(out_dir / LATENTS, header + a * row_bytes, lat)
            state = {"rows_done": b, "invalid": invalid, "problems": problems,
                     "seconds": state.get("seconds", 0.0) + (time.perf_counter() - t0)}
            t0 = time.perf_counter()
            atomic_write_json(out_dir / PROGRESS, state)
            bar.update(b - a)
            ran += 1
            if on_batch is not None:
                on_batch(ran, b)
    finally:
        bar.close()
    if ran < total_batches:
        log.info("encode: stopped after %d batches (%d of %d images done)", ran,
                 state.get("rows_done", done), n)
    store = LatentStore(out_dir, index, state)
    if store.complete and store.problems:
        log.warning("encode: %d of %d images could not be used (see %s)", len(store.problems),
                    n, out_dir / PROGRESS)
    if store.complete and not store.valid.any():
        raise DataError(f"none of the {n} images could be opened; first problem: "
                        f"{store.problems[0]}")
    return store


def _write_rows(path: Path, offset: int, rows: np.ndarray) -> None:
    """Write one batch's rows in place and flush them. A plain write, not a memory map: memory
    stays one batch whatever n is, and a full disk is an error to report, not a SIGBUS."""
    try:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(np.ascontiguousarray(rows).tobytes())
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise environment_error(path, exc) from None


@dataclass(frozen=True)
class EncodeSettings:
    """Everything the latents depend on (the key of the ``encode`` stage)."""

    version: ClassVar[int] = 1  # bump when a change alters the latents this stage writes

    vae: ModelRef
    resolution: int
    sample: bool
    seed: int | None  # only when sampling: the posterior mean does not depend on it
    # Fixed batch ranges are what a resumed run encodes; batch composition can change the
    # low-order bits of the VAE's output, so the batch size is part of the key.
    batch_size: int
    dtype: str
    device: str
    workers: int = setting(2, Interval(int, 0, 256), "DataLoader processes that decode "
                           "images; decoding is exact, whatever the number",
                           affects_results=False)
    # Ray Data writes the same latents bit for bit (tests/stages/test_stage_ray_encode.py), in
    # parts that LatentStore reads like the single file: where it runs is not part of the key.
    ray: str | None = setting(None, Text(empty=True), "Ray address ('local', 'auto', an "
                              "address, or '' for $RAY_ADDRESS); None: in this process",
                              optional=True, affects_results=False, cli=False)
    ray_workers: int | None = setting(None, Interval(int, 1, 100_000), "encoder actors on Ray",
                                      optional=True, affects_results=False, cli=False)


def encode_stage(call, records: Sequence[Record]) -> "LatentStore":
    """Run (or reuse) an encode stage (``call``: its ``gitd.plan.StageCall``, with model
    ``vae``). With ``settings.ray`` set, Ray Data encodes (``gitd.stages.ray_encode``), its actors
    building the VAE from the role (``call.model_factory``)."""
    st: EncodeSettings = call.settings

    def compute(stage) -> None:
        if st.ray is not None:
            from gitd.stages.ray_encode import encode_latents_ray

            encode_latents_ray(records, call.model_factory("vae"), stage.path,
                               resolution=st.resolution, batch_size=st.batch_size,
                               sample=st.sample, seed=st.seed or 0, dtype=call.dtype,
                               workers=st.ray_workers, address=st.ray)
            return
        encode_latents(records, call.model("vae"), stage.path, resolution=st.resolution,
                       batch_size=st.batch_size, num_workers=st.workers, sample=st.sample,
                       seed=st.seed or 0, device=call.device, dtype=call.dtype)

    ids = [r.id for r in records]
    return call.whole(compute, lambda stage: LatentStore.open(stage.path).check(ids))
