"""Images to tensors, and frozen image/text features cached on disk.

The retrieval model's training, the coreset selections (``gitd select``) and the evaluation share
this cache; it sits below all three, beside the encoders it runs (``gitd.models.encoders``).
Public API:

* ``embed_images(paths, image_model="auto", *, image_size=224, cache=None, device="auto",
  batch_size=64, pretrained=True, normalize="model") -> np.ndarray [n, d] float32``: pooled
  features of a frozen pretrained image encoder (not L2-normalised).
* ``embed_texts(texts, text_model="auto", *, cache=None, device="auto", batch_size=256)
  -> np.ndarray [n, d] float32``: frozen text features with the encoder's pooling.

Both accept a model name or an already built ``ImageEncoder``/``TextEncoder``. Features are cached
as ``.npy`` files under ``CACHE/features/`` (``CACHE`` = ``cache`` argument, else ``$GITD_CACHE``,
else ``~/.cache/gitd``), keyed by a fingerprint of the model, the preprocessing and the inputs
(texts themselves; image paths with their sizes and modification times), so a changed file or
setting is recomputed and nothing stale is ever returned. ``cache=False`` disables caching.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from gitd.data.images import ImageError, image_ref, open_rgb, resize_exact
from gitd.errors import GitdError
from gitd.log import get_logger, progress
from gitd.store import atomic_write_bytes, atomic_write_json, fingerprint, read_json
from gitd.threads import current_device_key
from gitd.workers import loader_batches

log = get_logger("models.features")

_INTERP = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "nearest": Image.Resampling.NEAREST}


def cache_root(cache: str | Path | None | bool = None) -> Path | None:
    """The cache folder: ``cache``, else ``$GITD_CACHE``, else ``~/.cache/gitd``; None if off."""
    if cache is False:
        return None
    if cache is None or cache is True:
        cache = os.environ.get("GITD_CACHE") or Path.home() / ".cache" / "gitd"
    return Path(cache).expanduser()


def _cache_file(cache, kind: str, key: dict) -> Path | None:
    root = cache_root(cache)
    return None if root is None else root / "features" / f"{kind}-{fingerprint(key, 24)}.npy"


def _load_cached(path: Path | None, n: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        log.warning("%s: unreadable cache file, recomputing", path)
        return None
    if arr.ndim != 2 or len(arr) != n or arr.dtype != np.float32:
        log.warning("%s: cache file has the wrong shape, recomputing", path)
        return None
    return arr


def _save_cached(path: Path | None, arr: np.ndarray) -> None:
    if path is None:
        return
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except GitdError as exc:  # a full or read-only cache must not stop an evaluation
        log.warning("feature cache not written: %s", exc)


def file_stamps(paths: Sequence[str | Path]) -> list:
    """(path, size, mtime_ns) per file: cheap identity for cache keys, no reading of contents."""
    out = []
    for p in paths:
        if hasattr(p, "stamp"):  # an image inside a tar shard
            out.append(p.stamp())
            continue
        try:
            st = os.stat(p)
            out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None, None))
    return out


# --------------------------------------------------------------------------------------------
# Decoding


def load_image_uint8(path: str | Path, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Decode one image as RGB, resize to ``size`` x ``size`` (no crop, as the papers do) and
    return a uint8 tensor [3, size, size]. Raises ``ImageError`` naming the file."""
    arr = np.asarray(resize_exact(open_rgb(path), size, _INTERP[interpolation]), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, resized uint8 images by index; errors are returned, not raised, so that a bad
    file reaches the main process as one ``ImageError`` (DataLoader workers cannot rebuild it)."""

    def __init__(self, paths: Sequence[str | Path], size: int, interpolation: str = "bicubic"):
        self.paths = list(paths)
        self.size = size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, load_image_uint8(self.paths[i], self.size, self.interpolation), None
        except ImageError as exc:
            error = (str(exc.path), exc.problem, exc.kind)
        except Exception as exc:  # resizing or converting an odd image: still one bad row
            error = (str(self.paths[i]), f"cannot prepare image ({type(exc).__name__}: {exc})",
                     "bad-image")
        return i, torch.zeros(3, self.size, self.size, dtype=torch.uint8), error


def _collate(items):
    # Runs in the worker: errors travel back as data, to the main process.
    errors = [(i, err) for i, _, err in items if err is not None]
    idx = torch.tensor([i for i, _, _ in items])
    return idx, torch.stack([x for _, x, _ in items]), errors


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1)))


def _checked(loader, errors: list | None):
    for idx, x, bad in loader_batches(loader, "re-run with --workers 0 to find the file "
                                              "that crashes it"):
        if bad and errors is None:
            raise ImageError(*bad[0][1])
        if bad:
            errors.extend((i, ImageError(*err)) for i, err in bad)
        yield idx, x


def image_loader(paths: Sequence[str | Path], size: int, *, batch_size: int = 64,
                 interpolation: str = "bicubic", workers: int | None = None,
                 batches: Sequence[Sequence[int]] | None = None, errors: list | None = None):
    """Yield ``(indices, uint8 [B, 3, size, size])`` decoded by a DataLoader with ``workers``
    processes; ``batches`` fixes the order (lists of indices), else sequential. An unreadable
    image raises ``ImageError`` naming the file; with an ``errors`` list it is appended there as
    ``(index, ImageError)`` instead and its image is zeros (the caller drops the row)."""
    ds = ImageFiles(paths, size, interpolation)
    workers = default_workers() if workers is None else workers
    if len(ds) < 16:
        workers = 0
    if batches is None:
        batches = [list(range(a, min(len(ds), a + batch_size)))
                   for a in range(0, len(ds), batch_size)]
    # Its own generator: a DataLoader otherwise draws from torch's global RNG, which would
    # shift dropout between preloaded and streamed training.
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers,
                                         collate_fn=_collate, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(0))
    return _checked(loader, errors)


def load_images(paths: Sequence[str | Path], size: int, *, interpolation: str = "bicubic",
                workers: int | None = None, desc: str = "decoding images",
                errors: list | None = None) -> torch.Tensor:
    """All images decoded and resized into one uint8 tensor [n, 3, size, size] (``errors``: as
    ``image_loader``)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    loader = image_loader(paths, size, batch_size=32, interpolation=interpolation,
                          workers=workers, errors=errors)
    with progress(total=len(paths), desc=desc, unit="img") as bar:
        for idx, x in loader:
            out[idx] = x
            bar.update(len(idx))
    return out


def preprocess(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


# --------------------------------------------------------------------------------------------
# Frozen features


def image_preprocessing(encoder, normalize: str = "model"):
    """(mean, std) for ``normalize`` = "model" (the encoder's own) or "clip"."""
    from gitd.models.encoders import CLIP_MEAN, CLIP_STD
    if normalize == "clip":
        return CLIP_MEAN, CLIP_STD
    return encoder.mean, encoder.std


@torch.no_grad()
def encode_image_batches(encoder, batches, *, mean, std, device, n: int,
                         desc: str = "image features") -> np.ndarray:
    """Run a frozen encoder over ``(indices, uint8 images)`` batches -> float32 [n, dim]."""
    was_training = encoder.training
    encoder.eval().to(device)
    out = np.zeros((n, encoder.dim), dtype=np.float32)
    with progress(total=n, desc=desc, unit="img") as bar:
        for idx, x in batches:
            feats = encoder(preprocess(x.to(device), mean, std))
            out[idx.numpy()] = feats.float().cpu().numpy()
            bar.update(len(idx))
    encoder.train(was_training)
    return out


def embed_images(paths: Sequence[str | Path], image_model="auto", *, image_size: int = 224,
                 cache=None, device="auto", batch_size: int = 64, pretrained: bool = True,
                 normalize: str = "model", interpolation: str = "bicubic",
                 workers: int | None = None, errors: list | None = None) -> np.ndarray:
    """Frozen pooled image features, float32 [len(paths), d], cached on disk.

    With an ``errors`` list, unreadable images are appended to it as ``(index, ImageError)``
    (kept with the cached features, so a cache hit reports them too) and their rows are zeros;
    without one, the first unreadable image raises ``ImageError``.

    ``image_model``: a name (``auto``, ``efficientnet_lite0``, ``timm:NAME``; see
    ``gitd.models.encoders``) or an ``ImageEncoder``. Images are resized to ``image_size``
    squared (bicubic, no crop) and normalised with the encoder's own statistics
    (``normalize="model"``) or CLIP's (``"clip"``). Raises ``ImageError`` for an unreadable image
    and ``ModelUnavailableError`` for a model that cannot be loaded.
    """
    from gitd.models.encoders import build_image_encoder, resolve_device
    paths = [image_ref(p) for p in paths]
    device = resolve_device(device)
    encoder = image_model
    if isinstance(image_model, str):
        encoder = build_image_encoder(image_model, image_size=image_size, pretrained=pretrained)
    if not encoder.pretrained:
        cache = False  # random weights differ per build: caching them would be a lie
    mean, std = image_preprocessing(encoder, normalize)
    key = {"model": encoder.name, "pretrained": encoder.pretrained, "size": image_size,
           "mean": mean, "std": std, "interpolation": interpolation,
           "files": file_stamps(paths), "device": current_device_key(device)}
    path = _cache_file(cache, "image", key)
    hit = _load_cached(path, len(paths))
    bad_path = path.with_suffix(".errors.json") if path is not None else None
    if hit is not None:
        bad = read_json(bad_path, []) if bad_path is not None and bad_path.exists() else []
        if isinstance(bad, list) and all(isinstance(b, list) and len(b) == 4 for b in bad):
            if bad and errors is None:
                raise ImageError(*bad[0][1:])
            if errors is not None:
                errors.extend((int(b[0]), ImageError(*b[1:])) for b in bad)
            log.debug("image features from cache %s", path)
            return hit
    found: list = []
    loader = image_loader(paths, image_size, batch_size=batch_size, interpolation=interpolation,
                          workers=workers, errors=found if errors is not None else None)
    feats = encode_image_batches(encoder, loader, mean=mean, std=std, device=device,
                                 n=len(paths))
    if bad_path is not None:
        try:
            atomic_write_json(bad_path, [[i, e.path, e.problem, e.kind] for i, e in found])
        except GitdError as exc:
            log.warning("feature cache not written: %s", exc)
    _save_cached(path, feats)
    if errors is not None:
        errors.extend(found)
    return feats


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def embed_texts(texts: Sequence[str], text_model="auto", *, cache=None, device="auto",
                batch_size: int = 256) -> np.ndarray:
    """Frozen text features, float32 [len(texts), d], cached on disk.

    ``text_model``: a name (``auto``, ``minilm``, a Hugging Face name or folder; see
    ``gitd.models.encoders``) or a ``TextEncoder``. Not L2-normalised unless the encoder's
    pooling says so (MiniLM, like sentence-transformers, normalises).
    """
    from gitd.models.encoders import build_text_encoder, resolve_device
    texts = [str(t) for t in texts]
    device = resolve_device(device)
    encoder = build_text_encoder(text_model) if isinstance(text_model, str) else text_model
    key = {"model": encoder.identity, "pooling": encoder.pooling, "normalize": encoder.normalize,
           "max_length": encoder.max_length, "n": len(texts), "texts": texts_digest(texts),
           "device": current_device_key(device)}
    path = _cache_file(cache, "text", key)
    hit = _load_cached(path, len(texts))
    if hit is not None:
        log.debug("text features from cache %s", path)
        return hit
    feats = encoder.encode(texts, batch_size=batch_size, device=device)
    _save_cached(path, feats)
    return feats
