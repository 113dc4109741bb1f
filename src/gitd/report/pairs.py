"""The pair cards of a report: each output image beside the source pair it came from.

What the two sides are called follows what the output is: a selection (``gitd select``) copies
real pairs, so its card is one real image with its source's place; a distillation shows its
synthetic image beside the medoid (GITD), the record nearest the prototype (PDS) or the record
whose caption prompted it (EDGE). Source images are found as the data layer finds them: a path
under the source's image root, or ``SHARD::MEMBER`` read from the WebDataset shard by offset.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from gitd.data.images import open_rgb
from gitd.errors import GitdError
from gitd.report import plots
from gitd.report.page import e, is_number, num
from gitd.store import to_json

# What the source side of a distilled pair is, per method (else "source").
SOURCE_LABELS = {"gitd": "medoid source", "pds": "nearest source of the prototype",
                 "edge": "source of the prompt"}
_KNOWN_ITEM_KEYS = {"image", "caption", "source_id", "source_image", "source_caption",
                    "cluster_size", "scores"}


def is_selection(manifest: dict) -> bool:
    """Whether the output holds real pairs picked by ``gitd select`` (not synthetic ones)."""
    return manifest.get("kind") == "select"


def thumbnail(ref: Any, size: int) -> str | None:
    """A data URI of the image ``ref`` (a path or a shard member) shrunk to fit ``size`` px, or
    None if unreadable."""
    from PIL import Image

    try:
        img = open_rgb(ref)
    except GitdError:
        return None
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    jpeg = io.BytesIO()
    img.save(jpeg, format="JPEG", quality=85, optimize=True)
    best, mime = jpeg.getvalue(), "image/jpeg"
    # Small, flat images (tiny presets, synthetic shapes) are often smaller and sharper as PNG.
    if max(img.size) <= 128:
        png = io.BytesIO()
        img.save(png, format="PNG", optimize=True)
        if len(png.getvalue()) <= len(best):
            best, mime = png.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(best).decode('ascii')}"


def _roots(out: Path, manifest: dict) -> list[Path]:
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    # The dataset's own image root first: a relative path in a manifest is relative to it.
    roots = [Path(source[k]) for k in ("image_root", "images") if isinstance(source.get(k), str)]
    if isinstance(source.get("path"), str):
        roots.append(Path(source["path"]).parent)
    return roots + [out, Path.cwd()]


def source_image(raw: str, out: Path, manifest: dict) -> Any | None:
    """Where a pair's ``source_image`` is: a file as given or under the source's roots, or the
    member of a WebDataset shard (``SHARD::MEMBER``, read by offset); None if not found."""
    from gitd.data.shards import find_member

    shard, sep, member = raw.partition("::")
    p = Path(shard if sep else raw)
    candidates = [p] if p.is_absolute() else [root / p for root in _roots(out, manifest)]
    for path in candidates:
        if path.is_file():
            return find_member(path, member) if sep else path
    return None


def scores_html(scores: dict, caption: str) -> str:
    """The per-pair scores: candidate lists with the chosen one marked, other values plainly."""
    if not scores:
        return ""
    used: set[str] = set()
    rows = []
    # A list of candidate texts is shown with the numeric list that scores them (matched by the
    # first word of the key, e.g. caption_candidates <-> caption_scores), the chosen one bold.
    for key, val in scores.items():
        if not (isinstance(val, list) and val and all(isinstance(v, str) for v in val)):
            continue
        stem = key.split("_")[0]
        partner = next((k for k, v in scores.items() if k != key and k.split("_")[0] == stem
                        and isinstance(v, list) and len(v) == len(val)
                        and all(is_number(x) for x in v)), None)
        items = []
        for i, text in enumerate(val):
            score = f" <b>{num(scores[partner][i])}</b>" if partner else ""
            cls = ' class="chosen"' if text == caption else ""
            items.append(f"<li{cls}>{e(text)}{score}</li>")
        used.update({key, partner} - {None})
        label = key if partner is None else f"{key} / {partner.split('_', 1)[-1]}"
        rows.append(f"<dt>{e(label)}:</dt><dd><ol>{''.join(items)}</ol></dd>")
    chosen_keys = [k for k, v in scores.items()
                   if isinstance(v, int) and not isinstance(v, bool)
                   and any(w in k for w in ("chosen", "best", "index"))]
    numeric_lists = [k for k, v in scores.items() if k not in used and isinstance(v, list)
                     and v and all(is_number(x) for x in v)]
    for key in numeric_lists:
        chosen = None
        if len(chosen_keys) == 1 and len(numeric_lists) == 1:
            chosen = scores[chosen_keys[0]]
            used.add(chosen_keys[0])
        vals = [f"<b>[{num(v)}]</b>" if i == chosen else num(v)
                for i, v in enumerate(scores[key])]
        note = f" (chosen: candidate {chosen})" if chosen is not None else ""
        rows.append(f"<dt>{e(key)}:</dt> <dd>{', '.join(vals)}{e(note)}</dd>")
        used.add(key)
    for key, val in scores.items():
        if key in used:
            continue
        text = num(val) if is_number(val) else e(json.dumps(val, ensure_ascii=False))
        rows.append(f"<dt>{e(key)}:</dt> <dd>{text}</dd>")
    return f'<dl class="scores">{"".join(rows)}</dl>'


def _source_side(i: int, item: dict, out: Path, manifest: dict, thumb: int) -> str:
    src_raw = item.get("source_image")
    if src_raw:
        found = source_image(str(src_raw), out, manifest)
        src_uri = thumbnail(found, thumb) if found is not None else None
        src_img = (f'<img src="{src_uri}" alt="source image of pair {i}">' if src_uri else
                   f'<div class="missing source-missing">source image not found:<br>'
                   f'{e(src_raw)}</div>')
    else:
        src_img = '<div class="missing source-missing">no source image recorded</div>'
    src_cap = item.get("source_caption")
    src_cap_html = (f'<p class="caption">{e(src_cap)}</p>' if src_cap not in (None, "")
                    else '<p class="caption muted">(no source caption)</p>')
    src_id = item.get("source_id")
    id_html = (f'<p class="path">source id {e(src_id)}</p>' if src_id not in (None, "") else "")
    label = SOURCE_LABELS.get(str(manifest.get("method")), "source")
    return (f'<div class="side source"><div class="label"><b>{e(label)}</b></div>'
            f'{src_img}{src_cap_html}{id_html}</div>')


def pair_card(i: int, item: dict, out: Path, manifest: dict, thumb: int) -> str:
    uri = thumbnail(out / item["image"], thumb)
    caption = item.get("caption", "")
    if isinstance(caption, list):
        caption = caption[0] if caption else ""
    selected = is_selection(manifest)
    what = "selected" if selected else "distilled"
    image = (f'<img src="{uri}" alt="{what} image {i}">' if uri else
             f'<div class="missing">image not readable: {e(item["image"])}</div>')
    if selected:
        # A selection is a copy of a real pair: one side, and where it was copied from.
        where = "".join(f'<p class="path">{e(k.replace("_", " "))} {e(item[k])}</p>'
                        for k in ("source_id", "source_image") if item.get(k) not in (None, ""))
        sides = (f'<div class="sides selected"><div class="side synthetic"><div class="label">'
                 f'<b>{what} (a real pair)</b></div>{image}<p class="caption">{e(caption)}</p>'
                 f'{where}</div></div>')
    else:
        left = (f'<div class="side synthetic"><div class="label"><b>{what}</b></div>{image}'
                f'<p class="caption">{e(caption)}</p></div>')
        sides = (f'<div class="sides">{left}'
                 f'{_source_side(i, item, out, manifest, thumb)}</div>')
    size = item.get("cluster_size")
    size_html = f'<span class="size">cluster size {e(size)}</span>' if size is not None else ""
    scores = item.get("scores") if isinstance(item.get("scores"), dict) else {}
    extra = {k: v for k, v in item.items() if k not in _KNOWN_ITEM_KEYS
             and not (selected and k == "source_image")}
    extra_html = (f"<details><summary>more</summary><pre>{e(to_json(extra))}</pre></details>"
                  if extra else "")
    return (f'<article class="pair" id="pair-{i}"><h3>pair {i} '
            f'<span class="muted">{e(item["image"])}</span>{size_html}</h3>{sides}'
            f'{scores_html(scores, str(caption))}{extra_html}</article>')


def cluster_section(items: list[dict]) -> str:
    """The cluster sizes, where the pairs have them (GITD, PDS); empty otherwise."""
    sizes = [int(s) for s in (it.get("cluster_size") for it in items) if is_number(s)]
    if not sizes:
        return ""
    uri = plots.cluster_size_chart(sizes)
    return ('<h2 id="clusters">Cluster sizes</h2>'
            f'<p>{len(sizes)} clusters covering {sum(sizes)} source images; smallest '
            f'{min(sizes)}, largest {max(sizes)}, median {sorted(sizes)[len(sizes) // 2]}.</p>'
            f'<img class="plot" src="{uri}" alt="cluster size of each pair">')
