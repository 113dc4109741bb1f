"""The sections of an output folder's report besides its pair cards: the header, the retrieval
results (with the chance level of each test set), stage timings, skipped rows and the config.

``results_section`` takes only ``Result`` objects, so any report that has results files (an
output folder's, a benchmark's) shows them the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitd.registry import summary_of
from gitd.report import plots
from gitd.report.page import digits_for, e, facts, is_number, metric, model_text, seconds
from gitd.report.pairs import is_selection
from gitd.report.results import METRICS, Result
from gitd.retrieval.chance import (at_chance, chance_noise, chance_recall, counts_from_totals,
                                   trivial_recalls)
from gitd.store import to_json

MAX_SKIPPED_SHOWN = 500


def untrained(manifest: dict) -> bool:
    if manifest.get("untrained") is True:
        return True
    models = manifest.get("models")
    if isinstance(models, dict):
        return models.get("untrained") is True or any(
            isinstance(v, dict) and v.get("untrained") is True for v in models.values())
    return False


def title_of(manifest: dict, n_items: int) -> str:
    """``gitd, 8 pairs`` / ``herding, 8 selected pairs``."""
    what = "selected pairs" if is_selection(manifest) else "pairs"
    return f"{manifest.get('method', 'unknown method')}, {manifest.get('pairs', n_items)} {what}"


def header(manifest: dict, out: Path, n_items: int, headline: str = "") -> str:
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    method = manifest.get("method", "unknown method")
    about = summary_of(str(method), "select" if is_selection(manifest) else "distill")
    fact_rows = [("method", e(method) + (f' <span class="muted">({e(about)})</span>'
                                         if about else "")),
                 ("preset", e(manifest.get("preset") or "–")),
                 ("pairs", e(manifest.get("pairs", n_items))),
                 ("seed", e(manifest.get("seed", "–")))]
    if source:
        src = e(source.get("path", "–"))
        if source.get("format"):
            src += f' <span class="muted">({e(source["format"])})</span>'
        fact_rows.append(("source dataset", src))
        if "n_valid" in source or "n_records" in source:
            fact_rows.append(("source records (valid / total)",
                              f'{e(source.get("n_valid", "?"))} / '
                              f'{e(source.get("n_records", "?"))}'))
        if source.get("fingerprint"):
            fact_rows.append(("source fingerprint", f"<code>{e(source['fingerprint'])}</code>"))
    for key in ("created", "gitd_version", "device", "dtype"):
        if manifest.get(key) not in (None, ""):
            fact_rows.append((key.replace("_", " "), e(manifest[key])))
    ablations = manifest.get("ablations")
    if ablations:
        text = (", ".join(e(a) for a in ablations) if isinstance(ablations, list)
                else e(json.dumps(ablations, ensure_ascii=False)))
        fact_rows.append(("ablations", text))
    fact_rows.append(("output folder", e(out)))

    models = manifest.get("models")
    model_facts = []
    if isinstance(models, dict):
        model_facts = [(str(k), model_text(v)) for k, v in models.items()
                       if k != "untrained" and v not in (None, "", {})]
    elif isinstance(models, list):
        model_facts = [(f"model {i}", model_text(v)) for i, v in enumerate(models)]

    parts = [f"<h1>gitd report: {e(title_of(manifest, n_items))}</h1>", headline]
    if untrained(manifest):
        parts.append('<div class="banner" id="untrained-warning">Untrained models: this output '
                     "was made with random-weight stand-in models (e.g. the tiny preset). Its "
                     "images and captions test the pipeline, not the method; do not read quality "
                     "into them.</div>")
    parts.append(facts(fact_rows))
    if model_facts:
        parts.append("<h2>Models</h2>" + facts(model_facts))
    return "\n".join(p for p in parts if p)


# -- retrieval results -----------------------------------------------------------------------

def _chance(result: Result) -> tuple[dict[str, float], dict[str, float], list[int]] | None:
    counts = result.test_counts
    if counts is None:
        return None
    per_image = counts_from_totals(*counts)
    return chance_recall(per_image), chance_noise(per_image), per_image


def _chance_note(result: Result) -> list[str]:
    """["at chance: ..."] for a result within noise of its test set's chance level."""
    chance, stat = _chance(result), result.summary.get("r_mean")
    if chance is None or stat is None:
        return []
    level, noise, _ = chance
    if not at_chance(stat["mean"], stat.get("std", 0.0), level["r_mean"], noise["r_mean"]):
        return []
    return [f"at chance: r_mean within noise of a random ranking's {level['r_mean']:.1f}"]


def headline(results: list[Result]) -> str:
    """The header's one line on this set's retrieval: its r_mean beside the chance level of its
    test set, and "at chance" where the two cannot be told apart."""
    this = [r for r in results if r.is_this_set and "r_mean" in r.summary]
    if not this:
        return ""
    r = this[0]
    stat = r.summary["r_mean"]
    text = f"retrieval r_mean <b>{stat['mean']:.2f} ± {stat.get('std', 0.0):.2f}</b>"
    chance = _chance(r)
    if chance is None:
        return f'<p class="headline" id="headline">{text}</p>'
    level, noise, _ = chance
    text += f" (a random ranking of this test set scores {level['r_mean']:.2f})"
    if at_chance(stat["mean"], stat.get("std", 0.0), level["r_mean"], noise["r_mean"]):
        return (f'<div class="banner" id="at-chance">At chance: {text}. These pairs did not teach '
                "the retrieval model anything this test can measure.</div>")
    return f'<p class="headline" id="headline">{text}</p>'


def _chance_rows(results: list[Result], digits: int) -> tuple[list[str], list[str]]:
    """One table row per distinct test set (the chance level of a random ranking on it), and
    the warnings about K too large for it."""
    rows, warnings, seen = [], [], set()
    for r in results:
        chance = _chance(r)
        if chance is None:
            continue
        ident = (str(r.test.get("path")), r.test_counts)
        if ident in seen:
            continue
        seen.add(ident)
        level, _, per_image = chance
        images, captions = r.test_counts
        cells = "".join(f'<td class="num">{level[m]:.{digits}f}</td>' for m in METRICS)
        rows.append(f'<tr class="chance"><td>chance level (random ranking)<br><span class="path">'
                    f"test {e(r.test.get('path') or '?')}: {images} images, {captions} captions"
                    f'</span></td>{cells}<td colspan="6"></td></tr>')
        warnings += [f"test {r.test.get('path') or '?'}: {w}" for w in trivial_recalls(per_image)]
    return rows, warnings


def results_section(results: list[Result], warnings: list[str]) -> str:
    if not results and not warnings:
        return ('<h2 id="retrieval">Retrieval evaluation</h2><p class="muted" id="no-results">'
                "No evaluation results for this set yet. Run <code>gitd evaluate --train "
                "OUT/annotations.json --test TEST --out OUT/results.json</code>, or pass result "
                "files with <code>--results</code>.</p>")
    parts = ['<h2 id="retrieval">Retrieval evaluation</h2>']
    for w in warnings:
        parts.append(f'<div class="banner">{e(w)}</div>')
    if results:
        head = "".join(f"<th>{e(m)}</th>" for m in METRICS)
        digits = digits_for(r.summary for r in results)
        rows = []
        for r in sorted(results, key=lambda r: (not r.is_this_set, bool(r.stale), r.series,
                                                r.pairs or 0, str(r.path))):
            cells = "".join(f'<td class="num">{metric(r.summary.get(m), digits)}</td>'
                            for m in METRICS)
            badge = ' <span class="muted">(this set)</span>' if r.is_this_set else ""
            notes = "".join(f'<br><span class="muted">{e(n)}</span>' for n in r.notes
                            + _chance_note(r))
            epochs = "–" if r.epochs is None else e(r.epochs)
            n_seeds = "–" if r.n_seeds is None else e(r.n_seeds)
            cls = "this" if r.is_this_set else "stale" if r.stale else ""
            rows.append(
                f'<tr class="{cls}">'
                f'<td>{e(r.label)}{badge}<br><span class="path">{e(r.path)}</span>{notes}</td>'
                f'{cells}<td>{e(r.image_model or "–")}</td><td>{e(r.text_model or "–")}</td>'
                f'<td>{e(r.protocol or "–")}</td><td class="num">{epochs}</td>'
                f'<td class="num">{n_seeds}</td><td>{e(r.selection)}</td></tr>')
        chance_rows, too_small = _chance_rows(results, digits if digits > 1 else 1)
        for w in too_small:
            parts.append(f'<div class="banner trivial-k">{e(w)}</div>')
        parts.append(
            '<div class="scroll"><table id="results-table"><tr><th>training set</th>' + head +
            "<th>image encoder</th><th>text encoder</th><th>protocol</th><th>epochs</th>"
            "<th>seeds</th><th>reported epoch</th></tr>" + "".join(rows + chance_rows) +
            "</table></div>")
        parts.append(
            '<p class="muted">Recall in percent, mean ± sample standard deviation over seeds. '
            "Each figure is from the last training epoch, or from the epoch chosen on a separate "
            "validation split where the table says so: never the best epoch picked on the test "
            "set. The chance level is what a random ranking of the same test set scores on "
            "average.</p>")
        best = [r for r in results if r.best_on_test]
        if best:
            rows = [f"<tr><td>{e(r.label)}</td>" + "".join(
                f'<td class="num">{metric(r.best_on_test.get(m), digits)}</td>' for m in METRICS)
                + "</tr>" for r in best]
            parts.append(
                "<details><summary>best epoch ON TEST (optimistic, for comparison with papers "
                f"only)</summary><table><tr><th>training set</th>{head}</tr>{''.join(rows)}"
                "</table></details>")
        plotted = [r for r in results if r.pairs is not None and not r.untrained and not r.stale]
        points = [{"method": r.series, "pairs": r.pairs, "summary": r.summary} for r in plotted]
        if len({(p["method"], p["pairs"]) for p in points}) >= 2:
            uri = plots.recall_vs_pairs_chart(points)
            parts.append(f'<p><img class="plot" id="recall-plot" src="{uri}" '
                         'alt="recall at K against the number of pairs, per method"></p>')
        unknown = [r for r in results if (r.pairs is None or r.untrained) and not r.stale]
        if unknown and len(results) > 1:
            parts.append('<p class="muted">Not plotted (number of pairs unknown, or untrained): '
                         + ", ".join(e(r.path) for r in unknown) + "</p>")
        stale = [r for r in results if r.stale]
        if stale:
            parts.append('<p class="muted">Not plotted (stale: the training set changed since): '
                         + ", ".join(e(r.path) for r in stale) + "</p>")
    return "\n".join(parts)


# -- the rest --------------------------------------------------------------------------------

def timings_section(timings: Any) -> str:
    if not isinstance(timings, dict) or not timings:
        return ""
    rows = [(str(k), float(v)) for k, v in timings.items() if is_number(v)]
    if not rows:
        return ""
    longest = max(v for _, v in rows) or 1.0
    total = sum(v for _, v in rows)
    body = "".join(
        f'<tr><td>{e(k)}</td><td class="num">{seconds(v)}</td>'
        f'<td><span class="bar" style="width:{max(1, round(240 * v / longest))}px"></span></td></tr>'
        for k, v in rows)
    return ('<h2 id="timings">Stage timings</h2><table id="timings-table">'
            '<tr><th>stage</th><th>time</th><th></th></tr>'
            f'{body}<tr><th>total</th><td class="num">{seconds(total)}</td><td></td></tr></table>')


def skipped_section(skipped: Any) -> str:
    if not isinstance(skipped, list):
        return ""
    if not skipped:
        return '<h2 id="skipped">Skipped rows</h2><p>None: every source row was usable.</p>'
    rows = []
    for p in skipped[:MAX_SKIPPED_SHOWN]:
        if isinstance(p, dict):
            problem = p.get("problem", p.get("message", ""))
            rows.append(f"<tr><td>{e(p.get('file', ''))}</td><td class=\"num\">"
                        f"{e('' if p.get('row') is None else p.get('row'))}</td>"
                        f"<td>{e(p.get('kind', ''))}</td><td>{e(problem)}</td></tr>")
        else:
            rows.append(f'<tr><td colspan="4">{e(p)}</td></tr>')
    more = (f"<p>… and {len(skipped) - MAX_SKIPPED_SHOWN} more (see manifest.json).</p>"
            if len(skipped) > MAX_SKIPPED_SHOWN else "")
    table = ('<table id="skipped-table"><tr><th>file</th><th>row</th><th>kind</th><th>problem</th>'
             f'</tr>{"".join(rows)}</table>{more}')
    open_attr = " open" if len(skipped) <= 20 else ""
    return (f'<h2 id="skipped">Skipped rows ({len(skipped)})</h2>'
            f'<details{open_attr}><summary>{len(skipped)} source '
            f'{"row was" if len(skipped) == 1 else "rows were"} skipped</summary>'
            f'{table}</details>')


def details_section(manifest: dict) -> str:
    parts = ['<h2 id="config">Configuration</h2>']
    config = manifest.get("config")
    parts.append("<details><summary>full config</summary>"
                 f"<pre id=\"config-json\">{e(to_json(config if config is not None else {}))}"
                 "</pre></details>")
    rest = {k: manifest[k] for k in ("source", "clustering", "stages", "work", "versions")
            if k in manifest}
    if rest:
        parts.append("<details><summary>source, clustering, stage folders, package versions"
                     f"</summary><pre>{e(to_json(rest))}</pre></details>")
    return "\n".join(parts)
