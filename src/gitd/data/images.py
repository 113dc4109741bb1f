"""Opening images safely and uniformly as RGB.

Every stage opens images through ``open_rgb`` so that odd modes (RGBA, LA, palette, grey, CMYK,
16-bit, 32-bit float) all become 8-bit RGB the same way, and so that a bad file becomes one
``ImageError`` naming the file rather than a PIL traceback.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from gitd.errors import GitdError

# Never silently load half an image: a truncated file is an error, not a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(GitdError):
    """An image file is missing, unreadable, truncated or a decompression bomb."""

    def __init__(self, path: str | Path, problem: str, kind: str = "bad-image"):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.kind = kind


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode == "I" and lo >= 0 and hi <= 65535 and hi > 255:
            arr = arr / 257.0
        elif hi > 255 or lo < 0:
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels go on white, as a browser shows them, not on black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def is_image_ref(x) -> bool:
    """True for something ``open_rgb`` opens: a path, or an image inside a tar shard."""
    return isinstance(x, (str, Path)) or (hasattr(x, "read_bytes") and hasattr(x, "shard"))


def image_ref(x):
    """A path string as a ``Path``; a ``TarMember`` (image inside a shard) unchanged."""
    return x if hasattr(x, "shard") else Path(x)


def image_key(ref) -> str:
    """Where an image is, for telling two references to one image apart from two images: the
    real path of a file, or ``SHARD::MEMBER`` of an image inside a shard."""
    return str(ref) if hasattr(ref, "shard") else os.path.realpath(ref)


def image_size_mtime(ref) -> tuple[int | None, int | None]:
    """(bytes, modification time in ns) of an image (a member: its size, its shard's time);
    (None, None) when it cannot be read."""
    try:
        if hasattr(ref, "shard"):
            return ref.size, os.stat(ref.shard).st_mtime_ns
        st = os.stat(ref)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None, None


def image_sha256(ref) -> str | None:
    """sha256 of an image's bytes (a file, or a member read by offset); None if unreadable."""
    h = hashlib.sha256()
    try:
        if hasattr(ref, "shard"):
            h.update(ref.read_bytes())
        else:
            with open(ref, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def open_rgb(path) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB, or raise ``ImageError`` saying why.

    ``path``: a file path, or a ``gitd.data.shards.TarMember`` (an image inside a tar shard,
    read by offset)."""
    member = hasattr(path, "read_bytes") and hasattr(path, "shard")
    if not member:
        path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path.open() if member else path) as img:
                img.load()
                return _to_rgb(img)
    except FileNotFoundError:
        raise ImageError(path, "image file not found", "missing-image") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image", "bad-image") from None
    except PermissionError:
        raise ImageError(path, "permission denied", "unreadable-image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"decompression bomb refused ({exc})", "decompression-bomb") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not a readable image (unknown or corrupt format)",
                         "corrupt-image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        kind = "truncated-image" if "truncated" in msg.lower() else "corrupt-image"
        raise ImageError(path, f"cannot decode image ({msg})", kind) from None


def resize_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """Shorter side to ``resolution`` (bicubic), centre crop: uint8 [resolution, resolution, 3].
    The CPU half of the encode stage's preprocessing; Ray's decode tasks ship this (4x smaller
    than float32) and never import torch."""
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8)


def load_pixels(ref, resolution: int) -> tuple[np.ndarray | None, str, str]:
    """(uint8 pixels, "", "") of one image, or (None, problem kind, message); never raises for
    a bad image, so one unreadable file cannot kill a worker and with it the run."""
    try:
        return resize_crop(open_rgb(ref), resolution), "", ""
    except ImageError as exc:
        return None, exc.kind, exc.problem
    except Exception as exc:  # a decoder bug in one odd file must not stop 100k others
        return None, "bad-image", f"cannot preprocess image ({type(exc).__name__}: {exc})"
