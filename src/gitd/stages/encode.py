"""Encode every image with the Stable Diffusion VAE into a resumable float16 latent file.

The VAE is SD's ``AutoencoderKL`` or TAESD (``AutoencoderTiny``, distilled to reproduce SD 1.x's
latent space); ``latent_scale`` is the one place that decides how each one's output reaches
SD's scaled latent range.

Output folder::

    latents.npy     float16 [n, C, h, w], row i = records[i]; already on SD's scaled latent
                    range (``latent_scale``), so a row can go straight into img2img
    index.json      ids in order, shape, dtype, scaling factor and the settings that made it
    progress.json   rows finished so far, which of them are valid, and the problems found

Images are opened in DataLoader workers; an image that cannot be opened becomes a ``Problem``
and its row is marked invalid (left as zeros) instead of stopping the run. After each batch its
rows are flushed to disk and only then is ``progress.json`` replaced (atomically), so a killed
run resumes from the last finished batch, and resident memory stays one batch whatever n is.
The file's disk space is reserved when it is created, so a full disk is one line at the start.
A missing, truncated or mismatched ``latents.npy`` or an inconsistent ``progress.json`` is
encoded again (``LatentStore.check`` says what is wrong), never trusted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from gitd.data.images import image_ref, load_pixels, resize_crop
from gitd.data.records import Problem, Record
from gitd.errors import ConfigError, DataError, environment_error
from gitd.log import get_logger, progress
from gitd.models.roles import ModelRef
from gitd.settings import Interval, Text, check, setting
from gitd.stages.arrays import create_array_file, npy_ok
from gitd.stages.cluster import RowSubset, ShardedRows
from gitd.store import Damaged, atomic_write_json, fingerprint, read_json, require
from gitd.workers import loader_batches

log = get_logger("stages.encode")

LATENTS = "latents.npy"
INDEX = "index.json"
PROGRESS = "progress.json"
# The sharded layout written by the Ray encoder: PARTS/index.json, PARTS/NNNNN.npy (rows
# [s * shard_rows, ...)) and PARTS/NNNNN.json (its bad rows; written last, marks the part done).
PARTS = "parts"


def part_path(folder: Path, s: int, suffix: str) -> Path:
    return Path(folder) / PARTS / f"{s:05d}{suffix}"


def part_files(folder: Path, index: dict[str, Any]) -> list[Path]:
    n, rows = len(index["ids"]), int(index["shard_rows"])
    return [part_path(folder, s, ".npy") for s in range(-(-n // rows))]


def part_done(folder: Path, index: dict[str, Any], s: int) -> dict[str, Any] | None:
    """Part ``s``'s record (its ``.json``) when the part is finished and whole: the record
    reads, and the ``.npy`` header and size say exactly its rows. A damaged part is not done
    (it is encoded again), never trusted."""
    n, rows = len(index["ids"]), int(index["shard_rows"])
    meta = read_json(part_path(folder, s, ".json"))
    if not isinstance(meta, dict):
        return None
    want = (min(rows, n - s * rows), *index["shape"][1:])
    try:
        with open(part_path(folder, s, ".npy"), "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            whole = os.fstat(f.fileno()).st_size == f.tell() + int(np.prod(shape)) * 2
    except (OSError, ValueError):
        return None
    if tuple(shape) != want or np.dtype(dtype) != np.float16 or not whole:
        return None
    return meta


def parts_state(folder: Path, index: dict[str, Any]) -> dict[str, Any]:
    """What the finished parts say, in the shape of the single-file ``progress.json``: rows
    done (the finished prefix), invalid rows and problems (in row order)."""
    n, rows = len(index["ids"]), int(index["shard_rows"])
    done, invalid, problems = 0, [], []
    for s in range(-(-n // rows)):
        meta = part_done(folder, index, s)
        if meta is None:
            break
        done = min(n, (s + 1) * rows)
        invalid.extend(meta.get("invalid", []))
        problems.extend(meta.get("problems", []))
    return {"rows_done": done, "invalid": invalid, "problems": problems}


def to_input(arr: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> CHW float32 in [-1, 1], the same operations in every process, so a Ray
    actor's batch is bit-identical to a DataLoader's."""
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).div_(127.5).sub_(1.0)


def preprocess(img: Image.Image, resolution: int) -> torch.Tensor:
    """Shorter side to ``resolution`` (bicubic), centre crop, CHW float32 in [-1, 1]."""
    return to_input(resize_crop(img, resolution))


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


def latent_scale(vae) -> float:
    """The factor from what ``vae.encode`` returns to SD's scaled latent range (what the UNet
    sees); every latent gitd stores has been multiplied by it, once.

    ``AutoencoderKL``: its ``scaling_factor`` (0.18215 for SD 1.x). ``AutoencoderTiny`` (TAESD):
    1.0, because its encoder was distilled to output SD's already-scaled latents; its config
    must say 1.0 too, since diffusers' pipelines decode ``latents / vae.config.scaling_factor``.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny

    factor = getattr(getattr(vae, "config", None), "scaling_factor", None)
    if isinstance(vae, AutoencoderTiny):
        if factor not in (None, 1.0):
            raise ConfigError(f"AutoencoderTiny with scaling_factor {factor} in its config: TAESD "
                              "latents are already on SD's scaled range, so it must be 1.0 "
                              "(diffusers decodes latents / scaling_factor)")
        return 1.0
    if isinstance(vae, AutoencoderKL):
        return float(factor if factor is not None else 1.0)
    raise ConfigError(f"cannot encode with {type(vae).__name__}: gitd encodes with diffusers' "
                      "AutoencoderKL (SD's VAE) or AutoencoderTiny (TAESD)")


def vae_latents(vae, x: torch.Tensor, *, sample: bool = False, indices: Sequence[int] = (),
                seed: int = 0) -> torch.Tensor:
    """``x`` ([B, 3, H, W] in [-1, 1]) to float32 latents on SD's scaled range (``latent_scale``
    applied here, and nowhere else).

    AutoencoderKL: the posterior mean, or with ``sample=True`` a draw seeded by ``seed`` and
    each row's entry of ``indices`` (reproducible whatever the batch). AutoencoderTiny has no
    posterior: its latent is deterministic and ``sample`` is refused.
    """
    scale = latent_scale(vae)
    if sample:
        _check_sampling(vae)
    out = vae.encode(x)
    if not hasattr(out, "latent_dist"):
        return out.latents.float() * scale
    dist = out.latent_dist
    if not sample:
        return dist.mean.float() * scale
    # One generator per image, seeded by its row: the draw does not depend on batch size,
    # on which rows were in the batch with it, or on resuming.
    noise = torch.stack([
        torch.randn(dist.mean.shape[1:], generator=torch.Generator("cpu").manual_seed(
            int(seed) * 1_000_003 + int(i)), dtype=torch.float32)
        for i in indices]).to(dist.mean.device, dist.mean.dtype)
    return (dist.mean + dist.std * noise).float() * scale


def _check_sampling(vae) -> None:
    from diffusers import AutoencoderTiny

    if isinstance(vae, AutoencoderTiny):
        raise ConfigError("sample_latents needs a VAE with a posterior (AutoencoderKL); "
                          "AutoencoderTiny (TAESD) encodes deterministically")


def latent_shape(vae, resolution: int) -> tuple[int, int, int]:
    """(C, h, w) of the latent for a ``resolution`` image: SD's VAE and TAESD halve the size once
    per block after the first (the pipelines' ``vae_scale_factor``; AutoencoderTiny registers
    its ``block_out_channels`` for that)."""
    cfg = vae.config
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if resolution % factor:
        raise ConfigError(f"resolution must be a multiple of {factor} for this VAE, "
                          f"got {resolution}")
    side = resolution // factor
    return (int(cfg.latent_channels), side, side)


class NotEncoded(DataError, Damaged):
    """A folder that does not hold encoded latents (a stage folder left damaged: recomputed)."""


class LatentStore:
    """An encode output folder: ``latents`` (read-only memmap), ``ids``, ``valid`` (bool mask),
    ``problems`` and ``scaling_factor``; ``flat()`` gives rows ready for clustering."""

    def __init__(self, folder: str | Path, index: dict[str, Any], state: dict[str, Any]):
        self.folder = Path(folder)
        self.index = index
        self.ids: list[str] = list(index["ids"])
        self.shape = tuple(index["shape"])
        self.scaling_factor = float(index["scaling_factor"])
        self.rows_done = int(state.get("rows_done", 0))
        self.valid = np.zeros(len(self.ids), dtype=bool)
        self.valid[: self.rows_done] = True
        invalid = np.asarray(state.get("invalid", []), dtype=np.int64)
        self.valid[invalid] = False
        self.problems = [Problem(p["file"], p["problem"], p.get("row"), p.get("kind", "error"))
                         for p in state.get("problems", [])]
        self._latents: np.ndarray | None = None

    @classmethod
    def open(cls, folder: str | Path) -> "LatentStore":
        folder = Path(folder)
        # One stage folder may hold both layouts (a run with --ray resumed without it, or the
        # other way round): the complete one is the result.
        found = []
        parts = read_json(folder / PARTS / INDEX)
        if isinstance(parts, dict) and "ids" in parts and "shard_rows" in parts:
            found.append(cls(folder, parts, parts_state(folder, parts)))
        index = read_json(folder / INDEX)
        if isinstance(index, dict) and "ids" in index and (folder / LATENTS).exists():
            found.append(cls(folder, index, read_json(folder / PROGRESS, {}) or {}))
        if not found:
            raise NotEncoded(f"{folder}: not an encoded-latents folder (no {INDEX} or {LATENTS}); "
                            "run the encode stage first")
        return next((s for s in found if s.complete), found[0])

    def check(self, ids: Sequence[str]) -> "LatentStore":
        """Validate a finished folder against the records it should hold; raise ``Damaged``
        saying what is wrong (the stage is then encoded again). Returns self."""
        require(self.ids == list(ids), f"{INDEX} lists other images than the dataset's")
        try:
            lat = self.latents  # a truncated or rewritten file fails here
        except DataError as exc:  # a part whose header disagrees with the others
            raise Damaged(str(exc)) from None
        require(lat.shape == self.shape and lat.dtype == np.float16,
                f"{LATENTS} holds {lat.dtype} {lat.shape}, {INDEX} says float16 {self.shape}")
        require(self.complete, f"{PROGRESS} says {self.rows_done} of {len(self.ids)} rows done")
        return self

    @property
    def complete(self) -> bool:
        return self.rows_done >= len(self.ids)

    @property
    def sharded(self) -> bool:
        return "shard_rows" in self.index

    @property
    def latents(self):
        """[n, C, h, w] float16: a read-only memmap, or for the sharded layout (``--ray``) a
        ``ShardedRows`` over ``parts/*.npy`` that indexes the same way."""
        if self._latents is None:
            if self.sharded:
                self._latents = ShardedRows(part_files(self.folder, self.index))
            else:
                self._latents = np.load(self.folder / LATENTS, mmap_mode="r")
        return self._latents

    @property
    def valid_indices(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def __len__(self) -> int:
        return len(self.ids)

    def matrix(self, valid_only: bool = True, files: bool = False):
        """The latents as a 2-D [rows, C*h*w] float16 view without copying (valid rows only by
        default, as a ``RowSubset``): pass this to ``clara`` when n is large. ``files``: read
        through ``ShardedRows`` even for the single-file layout, so that the view pickles to
        file names (for Ray tasks), not to its rows."""
        latents = self.latents
        if files and not self.sharded:
            latents = ShardedRows([self.folder / LATENTS])
        flat = latents.reshape(len(self.ids), -1)
        return RowSubset(flat, self.valid_indices) if valid_only else flat

    def flat(self, indices: Sequence[int] | None = None, *, chunk: int = 1024) -> np.ndarray:
        """Rows ``indices`` (default: every valid row) as float32 [m, C*h*w], converted a chunk
        at a time so the float16 -> float32 copy needs no second full-size buffer."""
        idx = self.valid_indices if indices is None else np.asarray(indices, dtype=np.int64)
        flat = self.latents.reshape(len(self.ids), -1)
        out = np.empty((len(idx), flat.shape[1]), dtype=np.float32)
        for a in range(0, len(idx), chunk):
            part = idx[a:a + chunk]
            order = np.argsort(part, kind="stable")
            out[a + order] = flat[part[order]]
        return out


def _settings(records, vae, resolution, sample, seed, shape) -> dict[str, Any]:
    cfg = vae.config
    return {"ids_fingerprint": fingerprint([r.id for r in records]),
            "vae": {"class": type(vae).__name__,
                    "name": getattr(cfg, "_name_or_path", "") or "",
                    "config": fingerprint({k: v for k, v in dict(cfg).items()
                                           if not k.startswith("_")})},
            "resolution": resolution, "sample": bool(sample), "seed": int(seed),
            "shape": list(shape)}


def encode_latents(records: Sequence[Record], vae, out_dir: str | Path, *, resolution: int = 512,
                   batch_size: int = 8, num_workers: int = 2, sample: bool = False,
                   seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
                   max_batches: int | None = None,
                   on_batch: Callable[[int, int], None] | None = None) -> LatentStore:
    """Encode ``records`` with ``vae`` (``AutoencoderKL`` or ``AutoencoderTiny``) into ``out_dir``.

    Latent = ``vae_latents``: the posterior mean (deterministic), or with ``sample=True`` a draw
    seeded by ``seed`` and the row's index, on SD's scaled range. Resumes a folder left by an interrupted run with the same
    records and settings; a folder made with different ones is started again.
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
        _check_sampling(vae)
    settings = _settings(records, vae, resolution, sample, seed, shape)

    index = read_json(out_dir / INDEX)
    state = _read_state(out_dir / PROGRESS, n)
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

    header = _npy_offset(out_dir / LATENTS)
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


def encode_batch(vae, x: torch.Tensor, ok: np.ndarray, indices: np.ndarray, row_shape, *,
                 sample: bool, seed: int, device, dtype) -> np.ndarray:
    """float16 latents [len(x), *row_shape] of one fixed batch; rows not ``ok`` stay zero.
    Shared by the in-process and the Ray encoder so that both give the same bytes."""
    lat = np.zeros((len(x), *row_shape), dtype=np.float16)
    if ok.any():
        with torch.inference_mode():
            z = vae_latents(vae, x[ok].to(device, dtype=dtype), sample=sample,
                            indices=indices[ok], seed=seed)
        lat[ok] = z.float().cpu().numpy().astype(np.float16)
    return lat


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


def _read_state(path: Path, n: int) -> dict[str, Any]:
    """``progress.json`` if it is consistent, else ``{}`` (encoding restarts at row 0 into the
    same file: a damaged progress file costs time, never a wrong latent)."""
    state = read_json(path)
    if state is None:
        if path.exists():
            log.warning("encode: %s is damaged; encoding every image again", path)
        return {}
    try:
        rows = state["rows_done"]
        ok = (isinstance(rows, int) and 0 <= rows <= n
              and all(isinstance(i, int) and 0 <= i < rows for i in state.get("invalid", []))
              and all(isinstance(p, dict) and "file" in p and "problem" in p
                      for p in state.get("problems", [])))
    except (TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        log.warning("encode: %s is inconsistent; encoding every image again", path)
        return {}
    return state


def _npy_offset(path: Path) -> int:
    mm = np.load(path, mmap_mode="r")
    offset = int(mm.offset)
    del mm
    return offset


__all__ = ["LatentStore", "encode_batch", "encode_latents", "latent_scale", "latent_shape",
           "preprocess", "resize_crop", "to_input", "vae_latents"]


# -- as a stage of a method run ------------------------------------------------------------------
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
    # Ray Data writes the same latents bit for bit (tests/stages/test_stage_raydata.py), in
    # parts that LatentStore reads like the single file: where it runs is not part of the key.
    ray: str | None = setting(None, Text(empty=True), "Ray address ('local', 'auto', an "
                              "address, or '' for $RAY_ADDRESS); None: in this process",
                              optional=True, affects_results=False, cli=False)
    ray_workers: int | None = setting(None, Interval(int, 1, 100_000), "encoder actors on Ray",
                                      optional=True, affects_results=False, cli=False)


def encode_stage(call, records: Sequence[Record]) -> "LatentStore":
    """Run (or reuse) an encode stage (``call``: its ``gitd.plan.StageCall``, with model
    ``vae``). With ``settings.ray`` set, Ray Data encodes (``gitd.stages.raydata``), its actors
    building the VAE from the role (``call.model_factory``)."""
    st: EncodeSettings = call.settings

    def compute(stage) -> None:
        if st.ray is not None:
            from gitd.stages.raydata import encode_latents_ray

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
