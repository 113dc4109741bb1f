"""Plots for the report, rendered with matplotlib's Agg canvas and returned as data URIs.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas directly rather than
through ``pyplot``: that never touches the global backend or pyplot's figure registry, so the
report can be written from any process (a notebook, a test, a server) without side effects.
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from typing import Sequence

KS = (1, 5, 10)
_LINESTYLES = {1: ":", 5: "--", 10: "-"}


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def cluster_size_chart(sizes: Sequence[int]) -> str:
    """Bar chart of each pair's cluster size (a histogram once bars would be unreadably thin)."""
    fig, (ax,) = _figure(7.0, 2.6)
    if len(sizes) <= 80:
        ax.bar(range(len(sizes)), sizes, color="#4c72b0", width=0.8)
        ax.set_xlabel("pair")
        ax.set_ylabel("cluster size (source images)")
        if len(sizes) <= 32:
            ax.set_xticks(range(len(sizes)))
        ax.set_xlim(-0.6, len(sizes) - 0.4)
    else:
        ax.hist(sizes, bins=min(40, max(5, int(math.sqrt(len(sizes))))), color="#4c72b0")
        ax.set_xlabel("cluster size (source images)")
        ax.set_ylabel("pairs")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return _to_data_uri(fig)


def recall_vs_pairs_chart(points: Sequence[dict]) -> str:
    """R@1/5/10 against the number of pairs, one colour per method, TR and IR side by side.

    ``points``: dicts with ``method``, ``pairs`` and ``summary`` ({"TR@1": {"mean", "std"}, ...});
    error bars are the std over seeds.
    """
    by_method: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        by_method[str(p["method"])].append(p)
    fig, axes = _figure(10.0, 3.6, ncols=2)
    colours = [f"C{i}" for i in range(10)]
    all_pairs = sorted({int(p["pairs"]) for p in points})
    for ax, direction in zip(axes, ("TR", "IR")):
        for mi, (method, pts) in enumerate(sorted(by_method.items())):
            pts = sorted(pts, key=lambda p: p["pairs"])
            for k in KS:
                xs, ys, es = [], [], []
                for p in pts:
                    stat = p["summary"].get(f"{direction}@{k}")
                    if stat is None:
                        continue
                    xs.append(p["pairs"])
                    ys.append(stat["mean"])
                    es.append(stat.get("std") or 0.0)
                if not xs:
                    continue
                ax.errorbar(xs, ys, yerr=es, color=colours[mi % len(colours)],
                            linestyle=_LINESTYLES[k], marker="o", markersize=4, capsize=3,
                            label=f"{method} R@{k}")
        if len(all_pairs) > 1 and all_pairs[0] > 0 and all_pairs[-1] / all_pairs[0] >= 8:
            # Sizes usually double (50, 100, 200): a log axis spaces them evenly, and ticks at
            # the sizes actually run read better than matplotlib's 2x10^1-style labels.
            ax.set_xscale("log")
            ax.minorticks_off()
            ticks = all_pairs if len(all_pairs) <= 8 else all_pairs[:: math.ceil(len(all_pairs) / 8)]
            ax.set_xticks(ticks, [str(t) for t in ticks])
        elif len(all_pairs) <= 8:
            ax.set_xticks(all_pairs, [str(t) for t in all_pairs])
        ax.set_xlabel("pairs in the training set")
        ax.set_ylabel(f"{direction} recall (%)")
        ax.set_title("text retrieval (TR)" if direction == "TR" else "image retrieval (IR)")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    if by_method:
        # One entry per method (colour) and one per K (line style), not methods x K entries:
        # a benchmark with 8 methods would otherwise need 24 and outgrow the figure.
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours[mi % len(colours)], marker="o", markersize=4,
                          label=method) for mi, method in enumerate(sorted(by_method))]
        handles += [Line2D([], [], color="0.35", linestyle=_LINESTYLES[k], label=f"R@{k}")
                    for k in KS]
        axes[1].legend(handles=handles, fontsize=7, loc="center left",
                       bbox_to_anchor=(1.02, 0.5), frameon=False)
    return _to_data_uri(fig)


# Columns of a curves.jsonl row that are not loss terms.
_NOT_LOSS = {"step", "epoch", "pairs_seen", "lr", "seconds", "pairs_per_s", "skipped"}


def loss_curves_chart(rows: Sequence[dict]) -> str:
    """Every loss term of ``gitd finetune``'s ``curves.jsonl`` rows against the step: the total
    on the left, each term on its own scale on the right."""
    terms = sorted({k for r in rows for k, v in r.items() if k not in _NOT_LOSS
                    and isinstance(v, (int, float)) and not isinstance(v, bool)} - {"loss"})
    fig, axes = _figure(10.0, 3.4, ncols=2)
    steps = [r.get("step") for r in rows]
    for ax, names in zip(axes, (["loss"], terms)):
        for i, name in enumerate(names):
            pts = [(s, r[name]) for s, r in zip(steps, rows)
                   if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)
                   and isinstance(s, (int, float)) and math.isfinite(r[name])]
            if pts:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                # Per-step losses are noisy (one batch each): faint, with a running mean drawn
                # over them (a window of about a 25th of the run).
                ax.plot(xs, ys, color=f"C{i}", linewidth=0.8, alpha=0.3)
                ax.plot(xs, _running_mean(ys, max(1, len(ys) // 25)), color=f"C{i}",
                        linewidth=1.6, label=name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("loss")
    axes[0].set_title("total loss")
    axes[1].set_title("loss terms")
    if terms:
        axes[1].legend(fontsize=7, frameon=False)
    return _to_data_uri(fig)


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
