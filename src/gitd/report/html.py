"""The report of one folder (``gitd report``): an output folder's pairs, results and run details,
or a fine-tuning run's loss curves (``gitd.report.run``).

The page is built by ``gitd.report.page`` (the self-contained HTML shell and its style sheet and
scripts, shipped as package data), from sections in ``gitd.report.pairs`` (the pair cards),
``gitd.report.sections`` (header, retrieval results with chance levels, timings, skipped rows,
config) and ``gitd.report.run``. ``render_report`` picks the kind of report from what the folder
holds; a new kind adds one branch there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with
from gitd.report.page import TITLE_PREFIX, e, html_page, nav
from gitd.report.pairs import cluster_section, is_selection, pair_card, source_image
from gitd.report.results import find_results
from gitd.report.run import curves_section, is_run_folder, render_run_report
from gitd.report.sections import (details_section, header, headline, results_section,
                                  skipped_section, timings_section, title_of)
from gitd.store import atomic_write_text

log = get_logger("report")

THUMB_SIZE = 224


# -- reading ---------------------------------------------------------------------------------

def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` as a dict; missing or malformed is one GitdError naming the file."""
    out = Path(out_dir)
    path = out / "manifest.json"
    if not out.exists():
        raise GitdError(f"{out}: no such folder (expected the output of gitd distill or select, "
                        "or a gitd finetune run)")
    if not out.is_dir():
        raise GitdError(f"{out}: not a folder (give the output folder of gitd distill or select)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise GitdError(f"{path}: not found (is {out} the output of gitd distill or select, or "
                        "a gitd finetune run?)") from None
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


# -- public ----------------------------------------------------------------------------------

def render_report(out_dir: str | Path, *, results: list[str | Path] | None = None,
                  thumb_size: int = THUMB_SIZE) -> str:
    """The report of output folder (or fine-tuning run folder) ``out_dir`` as one
    self-contained HTML string."""
    from gitd.settings import Interval, check

    check("thumb_size", thumb_size, Interval(int, 16, None))
    out = Path(out_dir)
    if is_run_folder(out) and not results:
        return render_run_report(out)
    return _render_output(out, results, thumb_size)


def _render_output(out: Path, results: list[str | Path] | None, thumb_size: int) -> str:
    from gitd.log import progress

    manifest = load_manifest(out)
    items: list[dict] = manifest["items"]
    found, warnings = find_results(out, results)
    cards = [pair_card(i, item, out, manifest, thumb_size)
             for i, item in enumerate(progress(items, desc="report", unit="pair"))]
    finetuned = manifest.get("finetuned")
    run = Path(finetuned["run"]) if isinstance(finetuned, dict) and isinstance(
        finetuned.get("run"), str) else None
    sections = {
        "retrieval": results_section(found, warnings),
        "pairs": (f'<h2 id="pairs">{"Selected" if is_selection(manifest) else "Distilled"} '
                  f'pairs ({len(items)})</h2>'
                  '<input id="filter" type="search" placeholder="filter pairs by text…" '
                  'aria-label="filter pairs by text">' +
                  (f'<div class="grid" id="pair-grid">{"".join(cards)}</div>' if cards else
                   "<p>This output has no pairs.</p>")),
        "clusters": cluster_section(items),
        "curves": curves_section(run, heading="Loss curves of the fine-tuned model "
                                              "(gitd finetune)") if run is not None else "",
        "timings": timings_section(manifest.get("timings")),
        "skipped": skipped_section(manifest.get("skipped")),
        "config": details_section(manifest),
    }
    labels = {"retrieval": "retrieval", "pairs": "pairs", "clusters": "cluster sizes",
              "curves": "loss curves", "timings": "timings", "skipped": "skipped rows",
              "config": "config"}
    # Links only to the sections this report has (a selection has no cluster sizes).
    links = [(k, labels[k]) for k, html in sections.items() if html]
    top = header(manifest, out, len(items), headline(found)) + nav(links)
    footer = (f'Showing <span id="rendered-count">?</span> of '
              f'<span id="expected-count">{len(items)}</span> pairs. '
              f"Written by gitd from {e(out / 'manifest.json')}. ")
    return html_page(title_of(manifest, len(items)), top, sections.values(), footer=footer,
                     scripts=["pairs.js"])


def is_report_file(path: Path) -> bool:
    """Whether ``path`` is an HTML report gitd wrote (so a new one may replace it)."""
    return file_starts_with(path, f"<title>{TITLE_PREFIX}".encode(), limit=1 << 14)


def _report_inputs(out: Path, results: list[str | Path] | None) -> Inputs:
    """What a report reads, which its destination must not overwrite: the folder's own files
    (but not an older report), the results named, and the images the manifest points to."""
    inputs = Inputs()
    for p in out.iterdir() if out.is_dir() else []:
        if p.is_file() and not is_report_file(p):
            inputs.file(p, "file of the reported folder")
    for p in results or []:
        inputs.file(p, "results file")
    if is_run_folder(out):
        return inputs
    manifest = load_manifest(out)
    for item in manifest["items"]:
        inputs.file(out / item["image"], "pair image")
        src = item.get("source_image")
        if isinstance(src, str):
            found = source_image(src, out, manifest)
            if found is not None:
                inputs.file(getattr(found, "shard", found), "source image")
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
