"""The self-contained HTML report of one output folder (``gitd report``).

One file, no network: images are downscaled thumbnails embedded as data URIs, plots are PNG data
URIs, CSS and the few lines of JS are inline, and a Content-Security-Policy forbids the page
from loading anything else, so it can be mailed or archived and opens the same anywhere.
Everything that comes from a manifest or a results file is user data and goes through
``html.escape`` (captions come from datasets and captioners and can hold any text).
"""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape
from pathlib import Path
from typing import Any, Iterable

from gitd.data.images import open_rgb
from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.registry import summary_of
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with
from gitd.report import plots
from gitd.report.results import METRICS, Result, find_results
from gitd.store import atomic_write_text, to_json

log = get_logger("report")

THUMB_SIZE = 224
MAX_SKIPPED_SHOWN = 500

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --bg:#f6f7f9; --card:#fff;
        --accent:#3b5bdb; --warn-bg:#fff4e5; --warn-fg:#8a4b00; --hi:#e7f5ff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
header, main, footer { max-width: 1280px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 22px; margin: 0 0 10px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.facts { display:grid; grid-template-columns: repeat(auto-fill, minmax(210px,1fr)); gap: 6px 18px;
         margin: 0; }
.facts div { min-width: 0; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.banner { background: var(--warn-bg); color: var(--warn-fg); border: 1px solid #f0c36d;
          border-radius: 6px; padding: 10px 14px; margin: 12px 0; font-weight: 600; }
.banner.info { background: var(--hi); color: #1c4a7a; border-color: #a5d8ff; font-weight: 400; }
nav { margin: 12px 0 0; font-size: 13px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; background: var(--card); font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.this td { background: var(--hi); }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(400px,1fr)); gap: 14px; }
.pair { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px;
        min-width: 0; }
.pair h3 { font-size: 13px; margin: 0 0 8px; color: var(--muted); font-weight: 600; }
.pair h3 .size { float: right; font-weight: 400; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.side { min-width: 0; }
.side .label { font-size: 11px; color: var(--muted); }
.side .label b { text-transform: uppercase; letter-spacing: .04em; font-weight: 600; }
.scroll { overflow-x: auto; max-width: 100%; }
.path { font-size: 11px; color: var(--muted); overflow-wrap: anywhere; margin: 2px 0 0; }
.side img, .side .missing { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #eceef2;
        border-radius: 4px; display: block; }
.side .missing { display: flex; align-items: center; justify-content: center; text-align: center;
        color: var(--muted); font-size: 12px; padding: 8px; overflow-wrap: anywhere; }
.caption { margin: 6px 0 0; overflow-wrap: anywhere; }
.side.synthetic .caption { font-weight: 600; }
.scores { margin: 8px 0 0; font-size: 12px; color: var(--muted); }
.scores dt { display: inline; font-weight: 600; }
.scores dd { display: inline; margin: 0; overflow-wrap: anywhere; }
.scores dd::after { content: ""; display: block; }
.scores b { color: var(--fg); }
.scores ol { margin: 2px 0 4px; padding-left: 20px; }
.scores li.chosen { color: var(--fg); font-weight: 600; }
details { margin: 8px 0; }
details > summary { cursor: pointer; color: var(--accent); }
pre { background: var(--card); border: 1px solid var(--line); padding: 10px; overflow: auto;
      font-size: 12px; max-height: 600px; }
.bar { display:inline-block; height: 10px; background: #4c72b0; border-radius: 2px;
       vertical-align: middle; }
.muted { color: var(--muted); }
.plot { max-width: 100%; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
#filter { padding: 4px 8px; width: 280px; max-width: 100%; margin-bottom: 10px; }
#js-errors { color: #b00020; white-space: pre-wrap; }
footer { color: var(--muted); font-size: 12px; padding: 24px 20px 30px; }
"""

# Installed first, in <head>, so that an error anywhere later on the page is shown in the page
# (and seen by the browser test) instead of only in a console nobody opens.
_JS_HEAD = """
window.onerror = function (msg, src, line) {
  var box = document.getElementById('js-errors');
  var text = 'script error: ' + msg + ' (line ' + line + ')';
  if (box) { box.hidden = false; box.textContent += text + '\\n'; }
  document.documentElement.setAttribute('data-js-errors', 'yes');
};
"""

_JS_BODY = """
(function () {
  var cards = document.querySelectorAll('.pair');
  var out = document.getElementById('rendered-count');
  out.textContent = String(cards.length);
  document.body.setAttribute('data-rendered-pairs', String(cards.length));
  var filter = document.getElementById('filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.toLowerCase();
      var shown = 0;
      cards.forEach(function (card) {
        var hit = !q || card.textContent.toLowerCase().indexOf(q) >= 0;
        card.hidden = !hit;
        if (hit) { shown += 1; }
      });
      out.textContent = String(shown);
    });
  }
})();
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


# -- reading ---------------------------------------------------------------------------------

def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` as a dict; missing or malformed is one GitdError naming the file."""
    out = Path(out_dir)
    path = out / "manifest.json"
    if not out.exists():
        raise GitdError(f"{out}: no such folder (expected the output of gitd distill or select)")
    if not out.is_dir():
        raise GitdError(f"{out}: not a folder (give the output folder of gitd distill or select)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise GitdError(f"{path}: not found (is {out} the output of gitd distill or select?)") \
            from None
    except OSError as exc:
        raise GitdError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise GitdError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise GitdError(f"{path}: malformed manifest (expected a JSON object, "
                        f"got {type(manifest).__name__})")
    items = manifest.get("items")
    if not isinstance(items, list):
        raise GitdError(f"{path}: malformed manifest (\"items\" must be a list of pairs)")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise GitdError(f"{path}: malformed manifest (items[{i}] needs an \"image\" path)")
    return manifest


def _thumbnail(path: Path, size: int) -> str | None:
    """A data URI of the image at ``path`` shrunk to fit ``size`` px, or None if unreadable."""
    from PIL import Image

    try:
        img = open_rgb(path)
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


def _source_image_path(raw: str, out: Path, manifest: dict) -> Path | None:
    """Where a pair's ``source_image`` is on disk: as given, or under the source's roots."""
    p = Path(raw)
    if p.is_absolute():
        return p if p.is_file() else None
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    # The dataset's own image root first: a relative path in a manifest is relative to it.
    roots = [Path(source[k]) for k in ("image_root", "images") if isinstance(source.get(k), str)]
    if isinstance(source.get("path"), str):
        roots.append(Path(source["path"]).parent)
    roots += [out, Path.cwd()]
    for root in roots:
        if (root / p).is_file():
            return root / p
    return None


# -- formatting ------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.{digits}f}"


def _metric(stat: dict[str, float] | None, digits: int = 1) -> str:
    if not stat:
        return '<span class="muted">–</span>'
    mean, std = stat["mean"], stat.get("std", 0.0)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(summaries: Iterable[dict[str, dict[str, float]]]) -> int:
    """One decimal for percentages, as the papers print them; more if every value is below 1,
    so that a file holding fractions (or a near-zero untrained model) does not print as 0.0."""
    means = [abs(s["mean"]) for summary in summaries for s in summary.values()]
    return 1 if means and max(means) > 1 else 3


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _model_text(value: Any) -> str:
    """A models entry: a plain id, or a dict whose id/name leads and whose other fields follow."""
    if not isinstance(value, dict):
        return _e(value)
    lead = next((value[k] for k in ("id", "name", "model") if value.get(k) not in (None, "")), None)
    rest = [f"{_e(k)}={_e(v)}" for k, v in value.items()
            if k not in ("id", "name", "model") and v not in (None, "", [], {})
            and not isinstance(v, (dict, list))]
    text = _e(lead) if lead is not None else ""
    if rest:
        text += f' <span class="muted">({", ".join(rest)})</span>'
    return text or _e(json.dumps(value, ensure_ascii=False))


# -- sections --------------------------------------------------------------------------------

def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{v}</dd></div>" for k, v in pairs)
    return f'<dl class="facts">{cells}</dl>'


def _untrained(manifest: dict) -> bool:
    if manifest.get("untrained") is True:
        return True
    models = manifest.get("models")
    if isinstance(models, dict):
        return models.get("untrained") is True or any(
            isinstance(v, dict) and v.get("untrained") is True for v in models.values())
    return False


def _header(manifest: dict, out: Path, n_items: int) -> str:
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    method = manifest.get("method", "unknown method")
    about = summary_of(str(method), "select" if manifest.get("kind") == "select" else "distill")
    facts = [("method", _e(method) + (f' <span class="muted">({_e(about)})</span>'
                                      if about else "")),
             ("preset", _e(manifest.get("preset") or "–")),
             ("pairs", _e(manifest.get("pairs", n_items))),
             ("seed", _e(manifest.get("seed", "–")))]
    if source:
        src = _e(source.get("path", "–"))
        if source.get("format"):
            src += f' <span class="muted">({_e(source["format"])})</span>'
        facts.append(("source dataset", src))
        if "n_valid" in source or "n_records" in source:
            facts.append(("source records (valid / total)",
                          f'{_e(source.get("n_valid", "?"))} / {_e(source.get("n_records", "?"))}'))
        if source.get("fingerprint"):
            facts.append(("source fingerprint", f"<code>{_e(source['fingerprint'])}</code>"))
    for key in ("created", "gitd_version", "device", "dtype"):
        if manifest.get(key) not in (None, ""):
            facts.append((key.replace("_", " "), _e(manifest[key])))
    ablations = manifest.get("ablations")
    if ablations:
        text = (", ".join(_e(a) for a in ablations) if isinstance(ablations, list)
                else _e(json.dumps(ablations, ensure_ascii=False)))
        facts.append(("ablations", text))
    facts.append(("output folder", _e(out)))

    models = manifest.get("models")
    model_facts = []
    if isinstance(models, dict):
        model_facts = [(str(k), _model_text(v)) for k, v in models.items()
                       if k != "untrained" and v not in (None, "", {})]
    elif isinstance(models, list):
        model_facts = [(f"model {i}", _model_text(v)) for i, v in enumerate(models)]

    parts = [f"<h1>gitd report: {_e(method)}, {_e(manifest.get('pairs', n_items))} pairs</h1>"]
    if _untrained(manifest):
        parts.append('<div class="banner" id="untrained-warning">Untrained models: this output '
                     "was made with random-weight stand-in models (e.g. the tiny preset). Its "
                     "images and captions test the pipeline, not the method; do not read quality "
                     "into them.</div>")
    parts.append(_facts(facts))
    if model_facts:
        parts.append('<h2 id="models">Models</h2>' + _facts(model_facts))
    return "\n".join(parts)


def _scores_html(scores: dict, caption: str) -> str:
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
                        and all(_is_number(x) for x in v)), None)
        items = []
        for i, text in enumerate(val):
            score = f" <b>{_num(scores[partner][i])}</b>" if partner else ""
            cls = ' class="chosen"' if text == caption else ""
            items.append(f"<li{cls}>{_e(text)}{score}</li>")
        used.update({key, partner} - {None})
        label = key if partner is None else f"{key} / {partner.split('_', 1)[-1]}"
        rows.append(f"<dt>{_e(label)}:</dt><dd><ol>{''.join(items)}</ol></dd>")
    chosen_keys = [k for k, v in scores.items()
                   if isinstance(v, int) and not isinstance(v, bool)
                   and any(w in k for w in ("chosen", "best", "index"))]
    numeric_lists = [k for k, v in scores.items() if k not in used and isinstance(v, list)
                     and v and all(_is_number(x) for x in v)]
    for key in numeric_lists:
        chosen = None
        if len(chosen_keys) == 1 and len(numeric_lists) == 1:
            chosen = scores[chosen_keys[0]]
            used.add(chosen_keys[0])
        vals = [f"<b>[{_num(v)}]</b>" if i == chosen else _num(v)
                for i, v in enumerate(scores[key])]
        note = f" (chosen: candidate {chosen})" if chosen is not None else ""
        rows.append(f"<dt>{_e(key)}:</dt> <dd>{', '.join(vals)}{_e(note)}</dd>")
        used.add(key)
    for key, val in scores.items():
        if key in used:
            continue
        text = _num(val) if _is_number(val) else _e(json.dumps(val, ensure_ascii=False))
        rows.append(f"<dt>{_e(key)}:</dt> <dd>{text}</dd>")
    return f'<dl class="scores">{"".join(rows)}</dl>'


_KNOWN_ITEM_KEYS = {"image", "caption", "source_id", "source_image", "source_caption",
                    "cluster_size", "scores"}


def _pair_card(i: int, item: dict, out: Path, manifest: dict, thumb: int) -> str:
    img_path = out / item["image"]
    uri = _thumbnail(img_path, thumb)
    caption = item.get("caption", "")
    if isinstance(caption, list):
        caption = caption[0] if caption else ""
    synth = (f'<img src="{uri}" alt="distilled image {i}">' if uri else
             f'<div class="missing">image not readable: {_e(item["image"])}</div>')
    left = (f'<div class="side synthetic"><div class="label"><b>distilled</b></div>{synth}'
            f'<p class="caption">{_e(caption)}</p></div>')

    src_raw = item.get("source_image")
    if src_raw:
        src_path = _source_image_path(str(src_raw), out, manifest)
        src_uri = _thumbnail(src_path, thumb) if src_path else None
        src_img = (f'<img src="{src_uri}" alt="source image of pair {i}">' if src_uri else
                   f'<div class="missing source-missing">source image not found:<br>'
                   f'{_e(src_raw)}</div>')
    else:
        src_img = '<div class="missing source-missing">no source image recorded</div>'
    src_cap = item.get("source_caption")
    src_cap_html = (f'<p class="caption">{_e(src_cap)}</p>' if src_cap not in (None, "")
                    else '<p class="caption muted">(no source caption)</p>')
    src_id = item.get("source_id")
    id_html = (f'<p class="path">source id {_e(src_id)}</p>' if src_id not in (None, "") else "")
    right = (f'<div class="side source"><div class="label"><b>medoid source</b></div>'
             f'{src_img}{src_cap_html}{id_html}</div>')

    size = item.get("cluster_size")
    size_html = f'<span class="size">cluster size {_e(size)}</span>' if size is not None else ""
    scores = item.get("scores") if isinstance(item.get("scores"), dict) else {}
    extra = {k: v for k, v in item.items() if k not in _KNOWN_ITEM_KEYS}
    extra_html = (f"<details><summary>more</summary><pre>{_e(to_json(extra))}</pre></details>"
                  if extra else "")
    return (f'<article class="pair" id="pair-{i}"><h3>pair {i} '
            f'<span class="muted">{_e(item["image"])}</span>{size_html}</h3>'
            f'<div class="sides">{left}{right}</div>'
            f'{_scores_html(scores, str(caption))}{extra_html}</article>')


def _cluster_section(items: list[dict]) -> str:
    sizes = [it.get("cluster_size") for it in items]
    sizes = [int(s) for s in sizes if _is_number(s)]
    if not sizes:
        return ""
    uri = plots.cluster_size_chart(sizes)
    total = sum(sizes)
    return ('<h2 id="clusters">Cluster sizes</h2>'
            f'<p>{len(sizes)} clusters covering {total} source images; smallest {min(sizes)}, '
            f'largest {max(sizes)}, median {sorted(sizes)[len(sizes) // 2]}.</p>'
            f'<img class="plot" src="{uri}" alt="cluster size of each pair">')


def _timings_section(timings: Any) -> str:
    if not isinstance(timings, dict) or not timings:
        return ""
    rows = [(str(k), float(v)) for k, v in timings.items() if _is_number(v)]
    if not rows:
        return ""
    longest = max(v for _, v in rows) or 1.0
    total = sum(v for _, v in rows)
    body = "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{_seconds(v)}</td>'
        f'<td><span class="bar" style="width:{max(1, round(240 * v / longest))}px"></span></td></tr>'
        for k, v in rows)
    return ('<h2 id="timings">Stage timings</h2><table id="timings-table">'
            '<tr><th>stage</th><th>time</th><th></th></tr>'
            f'{body}<tr><th>total</th><td class="num">{_seconds(total)}</td><td></td></tr></table>')


def _skipped_section(skipped: Any) -> str:
    if not isinstance(skipped, list):
        return ""
    if not skipped:
        return '<h2 id="skipped">Skipped rows</h2><p>None: every source row was usable.</p>'
    rows = []
    for p in skipped[:MAX_SKIPPED_SHOWN]:
        if isinstance(p, dict):
            problem = p.get("problem", p.get("message", ""))
            rows.append(f"<tr><td>{_e(p.get('file', ''))}</td><td class=\"num\">"
                        f"{_e('' if p.get('row') is None else p.get('row'))}</td>"
                        f"<td>{_e(p.get('kind', ''))}</td><td>{_e(problem)}</td></tr>")
        else:
            rows.append(f'<tr><td colspan="4">{_e(p)}</td></tr>')
    more = (f"<p>… and {len(skipped) - MAX_SKIPPED_SHOWN} more (see manifest.json).</p>"
            if len(skipped) > MAX_SKIPPED_SHOWN else "")
    table = ('<table id="skipped-table"><tr><th>file</th><th>row</th><th>kind</th><th>problem</th>'
             f'</tr>{"".join(rows)}</table>{more}')
    open_attr = " open" if len(skipped) <= 20 else ""
    return (f'<h2 id="skipped">Skipped rows ({len(skipped)})</h2>'
            f'<details{open_attr}><summary>{len(skipped)} source '
            f'{"row was" if len(skipped) == 1 else "rows were"} skipped</summary>'
            f'{table}</details>')


def _results_section(results: list[Result], warnings: list[str]) -> str:
    if not results and not warnings:
        return ('<h2 id="retrieval">Retrieval evaluation</h2><p class="muted" id="no-results">'
                "No evaluation results for this set yet. Run <code>gitd evaluate --train "
                "OUT/annotations.json --test TEST --out OUT/results.json</code>, or pass result "
                "files with <code>--results</code>.</p>")
    parts = ['<h2 id="retrieval">Retrieval evaluation</h2>']
    for w in warnings:
        parts.append(f'<div class="banner">{_e(w)}</div>')
    if results:
        head = "".join(f"<th>{_e(m)}</th>" for m in METRICS)
        digits = _digits(r.summary for r in results)
        rows = []
        for r in sorted(results, key=lambda r: (not r.is_this_set, r.series,
                                                r.pairs or 0, str(r.path))):
            cells = "".join(f'<td class="num">{_metric(r.summary.get(m), digits)}</td>'
                            for m in METRICS)
            badge = ' <span class="muted">(this set)</span>' if r.is_this_set else ""
            notes = "".join(f'<br><span class="muted">{_e(n)}</span>' for n in r.notes)
            epochs = "–" if r.epochs is None else _e(r.epochs)
            seeds = "–" if r.n_seeds is None else _e(r.n_seeds)
            rows.append(
                f'<tr class="{"this" if r.is_this_set else ""}">'
                f'<td>{_e(r.label)}{badge}<br><span class="path">{_e(r.path)}</span>{notes}</td>'
                f'{cells}<td>{_e(r.image_model or "–")}</td><td>{_e(r.text_model or "–")}</td>'
                f'<td>{_e(r.protocol or "–")}</td><td class="num">{epochs}</td>'
                f'<td class="num">{seeds}</td><td>{_e(r.selection)}</td></tr>')
        parts.append(
            '<div class="scroll"><table id="results-table"><tr><th>training set</th>' + head +
            "<th>image encoder</th><th>text encoder</th><th>protocol</th><th>epochs</th>"
            "<th>seeds</th><th>reported epoch</th></tr>" + "".join(rows) + "</table></div>")
        parts.append(
            '<p class="muted">Recall in percent, mean ± sample standard deviation over seeds. '
            "Each figure is from the last training epoch, or from the epoch chosen on a separate "
            "validation split where the table says so: never the best epoch picked on the test "
            "set.</p>")
        best = [r for r in results if r.best_on_test]
        if best:
            rows = "".join(
                f"<tr><td>{_e(r.label)}</td>" + "".join(
                    f'<td class="num">{_metric(r.best_on_test.get(m), digits)}</td>'
                    for m in METRICS)
                + "</tr>" for r in best)
            parts.append(
                "<details><summary>best epoch ON TEST (optimistic, for comparison with papers "
                f"only)</summary><table><tr><th>training set</th>{head}</tr>{rows}</table>"
                "</details>")
        points = [{"method": r.series, "pairs": r.pairs, "summary": r.summary}
                  for r in results if r.pairs is not None and not r.untrained]
        distinct = {(p["method"], p["pairs"]) for p in points}
        if len(distinct) >= 2:
            uri = plots.recall_vs_pairs_chart(points)
            parts.append(f'<p><img class="plot" id="recall-plot" src="{uri}" '
                         'alt="recall at K against the number of pairs, per method"></p>')
        unknown = [r for r in results if r.pairs is None or r.untrained]
        if unknown and len(results) > 1:
            parts.append('<p class="muted">Not plotted (number of pairs unknown, or untrained): '
                         + ", ".join(_e(r.path) for r in unknown) + "</p>")
    return "\n".join(parts)


def _details_section(manifest: dict) -> str:
    parts = ['<h2 id="config">Configuration</h2>']
    config = manifest.get("config")
    parts.append("<details><summary>full config</summary>"
                 f"<pre id=\"config-json\">{_e(to_json(config if config is not None else {}))}"
                 "</pre></details>")
    rest = {k: manifest[k] for k in ("source", "clustering", "stages", "work", "versions")
            if k in manifest}
    if rest:
        parts.append("<details><summary>source, clustering, stage folders, package versions"
                     f"</summary><pre>{_e(to_json(rest))}</pre></details>")
    return "\n".join(parts)


# -- public ----------------------------------------------------------------------------------

def render_report(out_dir: str | Path, *, results: list[str | Path] | None = None,
                  thumb_size: int = THUMB_SIZE) -> str:
    """The report of output folder ``out_dir`` as one self-contained HTML string."""
    from gitd.log import progress
    from gitd.settings import Interval, check

    check("thumb_size", thumb_size, Interval(int, 16, None))
    out = Path(out_dir)
    manifest = load_manifest(out)
    items: list[dict] = manifest["items"]
    found, warnings = find_results(out, results)

    cards = [_pair_card(i, item, out, manifest, thumb_size)
             for i, item in enumerate(progress(items, desc="report", unit="pair"))]
    method = manifest.get("method", "gitd")
    title = f"gitd report: {method}, {manifest.get('pairs', len(items))} pairs"
    nav = ('<nav><a href="#retrieval">retrieval</a><a href="#pairs">pairs</a>'
           '<a href="#clusters">cluster sizes</a><a href="#timings">timings</a>'
           '<a href="#skipped">skipped rows</a><a href="#config">config</a></nav>')
    body = [
        f"<header>{_header(manifest, out, len(items))}{nav}</header>",
        "<main>",
        _results_section(found, warnings),
        f'<h2 id="pairs">Distilled pairs ({len(items)})</h2>',
        '<input id="filter" type="search" placeholder="filter pairs by text…" '
        'aria-label="filter pairs by text">',
        f'<div class="grid" id="pair-grid">{"".join(cards)}</div>' if cards else
        "<p>This output has no pairs.</p>",
        _cluster_section(items),
        _timings_section(manifest.get("timings")),
        _skipped_section(manifest.get("skipped")),
        _details_section(manifest),
        "</main>",
        '<footer>Showing <span id="rendered-count">?</span> of '
        f'<span id="expected-count">{len(items)}</span> pairs. '
        f"Written by gitd from {_e(out / 'manifest.json')}. "
        '<div id="js-errors" hidden></div></footer>',
        f"<script>{_JS_BODY}</script>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><script>{_JS_HEAD}</script><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def is_report_file(path: Path) -> bool:
    """Whether ``path`` is an HTML report gitd wrote (so a new one may replace it)."""
    return file_starts_with(path, b"<title>gitd report:", limit=1 << 14)


def _report_inputs(out: Path, results: list[str | Path] | None) -> Inputs:
    """What a report reads, which its destination must not overwrite: the folder's own files
    (but not an older report), the results named, and the images the manifest points to."""
    inputs = Inputs()
    for p in out.iterdir() if out.is_dir() else []:
        if p.is_file() and not is_report_file(p):
            inputs.file(p, "file of the reported folder")
    for p in results or []:
        inputs.file(p, "results file")
    manifest = load_manifest(out)
    for item in manifest["items"]:
        inputs.file(out / item["image"], "pair image")
        src = item.get("source_image")
        if isinstance(src, str):
            found = _source_image_path(src, out, manifest)
            if found is not None:
                inputs.file(found, "source image")
    return inputs


def write_report(out_dir: str | Path, *, results: list[str | Path] | None = None,
                 dest: str | Path | None = None, thumb_size: int = THUMB_SIZE) -> Path:
    """Write the report of ``out_dir`` to ``dest`` (default ``OUT/report.html``), atomically.

    ``results``: extra results files (or folders of them) beside ``OUT/results.json`` and
    ``OUT/results/*.json``, e.g. the same test evaluated on other methods and sizes to plot
    recall against the number of pairs.
    """
    from gitd.data.tensor_sets import is_tensor_set
    from gitd.report.benchmark import is_benchmark, write_benchmark_report
    from gitd.report.tensor_set import write_tensor_set_report

    if is_benchmark(out_dir):  # a gitd benchmark folder: its comparison table and plot
        return write_benchmark_report(out_dir, dest=dest)
    if is_tensor_set(out_dir):  # another method's distilled tensor file
        return write_tensor_set_report(out_dir, dest=dest)
    dest = Path(dest) if dest is not None else Path(out_dir) / "report.html"
    if dest.is_dir():
        raise GitdError(f"{dest}: is a folder; give the report's file name, e.g. {dest}/report.html")
    html = render_report(out_dir, results=results, thumb_size=thumb_size)
    check_output_file(dest, _report_inputs(Path(out_dir), results), what="report",
                      owned=is_report_file, create_parent=True)
    atomic_write_text(dest, html)
    claim(dest)
    log.info("wrote %s (%.1f MB)", dest, len(html.encode("utf-8")) / 1e6)
    return dest
