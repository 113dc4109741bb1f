"""The report of another method's distilled tensor file (LoRS / RepBlend ``distilled_N.pt``,
MTT-VL ``images_best.pt`` + ``labels_best.pt``): its images, what the file holds, its learned
similarity matrix and learning rates, as one self-contained HTML page.

The file is read as ``gitd evaluate`` reads it (``gitd.data.tensor_sets``, weights only). Such a
set has no captions, only text embeddings, so the cards show the images and their index; the
pixels are shown as stored after undoing the declared normalisation, clipped to what a screen
shows.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

from gitd.log import get_logger
from gitd.outdir import file_starts_with
from gitd.report.page import html_page

log = get_logger("report")

MAX_CARDS = 500


def default_destination(path: Path) -> Path:
    """``FOLDER/report.html`` for a folder, ``distilled_N.report.html`` beside a file."""
    return path / "report.html" if path.is_dir() else path.with_name(path.stem + ".report.html")


def _png(pixels, size: int) -> str:
    """float [3, H, W] on the 0-255 scale -> a PNG data URI at most ``size`` px wide."""
    from PIL import Image

    arr = pixels.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    if max(img.size) < size:  # small distilled images: scale up, nearest, to be seen
        factor = max(1, size // max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    else:
        img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heatmap(matrix) -> str:
    """The matrix as a PNG data URI (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = ax.imshow(matrix.numpy(), cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax)
    ax.set_xlabel("text")
    ax.set_ylabel("image")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _facts(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def render_tensor_set(path: str | Path, *, normalisation: str = "clip", thumb_size: int = 112
                      ) -> str:
    from gitd.data.tensor_sets import load_tensor_set

    ts = load_tensor_set(path, normalisation=normalisation)
    n = len(ts)
    rates = ("none in the file" if ts.lr_image is None and ts.lr_text is None else
             f"image {ts.lr_image}, text {ts.lr_text}")
    facts = [("format", ts.format), ("files", ", ".join(str(f) for f in ts.files)),
             ("keys", ", ".join(ts.keys)), ("pairs", n),
             ("images", f"{list(ts.pixels.shape[1:])} pixels, {ts.normalisation}-normalised "
                        "in the file"),
             ("text", f"{ts.text.shape[1]}-d embeddings (no caption text)"),
             ("similarity matrix", "learned, shown below" if ts.similarity is not None
              else "none"),
             ("learned learning rates", rates)]
    cards = "".join(f'<div class="card"><img src="{_png(ts.pixels[i], thumb_size)}" '
                    f'alt="image {i}">#{i}</div>' for i in range(min(n, MAX_CARDS)))
    more = (f'<p class="muted">Showing the first {MAX_CARDS} of {n} images.</p>'
            if n > MAX_CARDS else "")
    heat = (f'<h2>Learned similarity matrix</h2><p><img class="plot" id="similarity" '
            f'src="{_heatmap(ts.similarity)}" alt="learned similarity matrix"></p>'
            if ts.similarity is not None else "")
    title = f"{ts.format} file, {n} pairs"
    header = f"<h1>{escape(title)}</h1>{_facts(facts)}"
    body = ('<p class="muted">Evaluate it with <code>gitd evaluate --train '
            f"{escape(str(path))} --test TEST</code>.</p>{heat}"
            f'<h2>Images</h2><div class="thumbs" id="pair-grid">{cards}</div>{more}')
    return html_page(title, header, [body])


def write_tensor_set_report(path: str | Path, *, dest: str | Path | None = None) -> Path:
    """Write the report of tensor file (or folder) ``path``; returns where."""
    from gitd.outdir import Inputs, check_output_file, claim
    from gitd.store import atomic_write_text

    path = Path(path)
    dest = Path(dest) if dest is not None else default_destination(path)
    html = render_tensor_set(path)
    inputs = Inputs()
    for f in ([path] if path.is_file() else list(path.glob("*.pt"))):
        inputs.file(f, "tensor file")
    check_output_file(dest, inputs, what="report", owned=_is_report_page, create_parent=True)
    atomic_write_text(dest, html)
    claim(dest)
    log.info("wrote %s", dest)
    return dest


def _is_report_page(path: Path) -> bool:
    """A page gitd wrote (every report's title starts so), which a new report may replace.
    Not gitd.report.html's: that module dispatches to this one."""
    return file_starts_with(path, b"<title>gitd report:", limit=1 << 14)
