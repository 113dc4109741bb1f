"""Opening and resizing images safely and uniformly as RGB.

Every stage opens images through ``open_rgb``, the one guard around PIL: odd modes (RGBA, LA,
palette, grey, CMYK, 16-bit, 32-bit float) all become 8-bit RGB the same way, and ANY failure
(missing or truncated files, decompression bombs, and decoders that raise ``NotImplementedError``,
``BLPFormatError``, ``RuntimeError`` or anything else on exotic DDS, BLP or AVIF files) becomes
one ``ImageError`` naming the file and a problem ``kind``, which callers turn into a per-row
problem. An image whose sides differ by more than ``MAX_ASPECT`` is refused before decoding:
a 1 x 150,000 px strip is 669 bytes, but resizing its short side to 512 px would need ~100 GB.
Resizing goes through ``resize_cover`` / ``resize_exact``, whose memory is bounded by the
output size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from gitd.data.records import Problem
from gitd.errors import GitdError

# Never silently load half an image: a truncated file is an error, not a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Longest side / shortest side beyond which an image is a problem row, not a training image:
# its centre crop would keep under 5% of it. Real photographs and panoramas stay well below.
MAX_ASPECT = 20.0


class ImageError(GitdError):
    """An image file is missing, unreadable, truncated or a decompression bomb."""

    def __init__(self, path: str | Path, problem: str, kind: str = "bad-image"):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.kind = kind

    def to_problem(self, row: int | None = None) -> Problem:
        """The per-row problem of the record whose image this is."""
        return Problem(self.path, self.problem, row, self.kind)


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


def open_rgb(path: str | Path, *, max_aspect: float | None = MAX_ASPECT) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB, or raise ``ImageError`` saying why.

    Whatever the decoder raises becomes an ``ImageError``: a hostile or exotic file is one
    problem row, in the main process, a DataLoader worker or a process pool alike."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max_aspect is not None and (min(w, h) < 1 or max(w, h) > max_aspect * min(w, h)):
                    raise ImageError(path, f"{w}x{h} px: sides differ by more than "
                                     f"{max_aspect:g}x, too extreme to resize or crop usefully",
                                     "extreme-aspect")
                img.load()
                return _to_rgb(img)
    except ImageError:
        raise
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
    except MemoryError:
        raise ImageError(path, "out of memory while decoding", "unreadable-image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = _oneline(exc)
        kind = "truncated-image" if "truncated" in msg.lower() else "corrupt-image"
        raise ImageError(path, f"cannot decode image ({msg})", kind) from None
    except Exception as exc:  # decoders of rare formats raise anything (NotImplementedError...)
        raise ImageError(path, f"cannot decode image ({type(exc).__name__}: {_oneline(exc)})",
                         "unsupported-image") from None


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def resize_cover(img: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Scale the shorter side to ``size`` and centre-crop to ``size`` x ``size``.

    An ordinary image is resized whole, then cropped; an elongated one (the whole resize over
    4x the output) has only its crop resampled (PIL's ``box``), so memory stays near the
    output's whatever the aspect ratio."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    if nw * nh <= 4 * size * size:
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        return img.crop((left, top, left + size, top + size))
    sx, sy = w / nw, h / nh  # the crop of the whole resize, in source coordinates
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), resample, box=box)


def resize_exact(img: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Scale to ``size`` x ``size`` without cropping (as the retrieval papers do)."""
    return img if img.size == (size, size) else img.resize((size, size), resample)

