"""``gitd check``: validate a dataset completely before spending GPU hours on it.

Unlike ``load_dataset`` (which only checks that image files exist), ``check_dataset`` decodes
every image, and also reports images listed more than once (``duplicate-image``), which the
loader silently merges. Every problem is one line naming the file and, where there is one, the
row.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gitd.data.formats import read_dataset, verify_image_files
from gitd.data.formats.load import missing_images_hint
from gitd.data.records import Dataset, Problem
from gitd.data.shards import TarMember
from gitd.errors import DataError
from gitd.store import to_json


@dataclass
class CheckReport:
    """What ``check_dataset`` found: a summary dict, the problems, and the usable records."""

    summary: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    dataset: Dataset | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "problems": [p.to_dict() for p in self.problems]}

    def to_json(self) -> str:
        return to_json(self.to_dict())

    def format_text(self) -> str:
        s = self.summary
        lines = [f"dataset:      {s['source']} ({s['format']})",
                 f"image root:   {s['image_root']}"]
        if s.get("split"):
            lines.append(f"split:        {s['split']}")
        lines.append(f"images:       {s['images']} usable")
        cpi = s["captions_per_image"]
        lines.append(f"captions:     {s['captions']}" + (
            f" (per image min {cpi['min']}, median {cpi['median']:g}, max {cpi['max']})"
            if cpi else ""))
        size = s["image_size"]
        if size:
            w, h = size["width"], size["height"]
            lines.append(f"image size:   min {w['min']}x{h['min']}, median "
                         f"{w['median']:g}x{h['median']:g}, max {w['max']}x{h['max']} (w x h)")
        by_kind = s["problems_by_kind"]
        if by_kind:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
            lines.append(f"problems:     {s['problems']} ({kinds})")
        else:
            lines.append("problems:     none")
        if s.get("hint"):
            lines.append(f"hint:         {s['hint']}")
        lines.extend(str(p) for p in self.problems)
        return "\n".join(lines)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def check_dataset(path, images=None, *, split: str = "train", allow_outside_root: bool = False,
                  workers: int | None = None) -> CheckReport:
    """Validate every row and decode every image of a dataset.

    A dataset that cannot be read at all raises ``DataError`` (the CLI exits 2); otherwise the
    report's ``exit_code`` is 0 when nothing is wrong and 1 when any problem was found.
    """
    ds, builder = read_dataset(path, images, split, strict=False,
                               allow_outside_root=allow_outside_root)
    sizes: list[tuple[int, int]] = []
    if ds.records:
        kept = []
        results = verify_image_files([r.image for r in ds.records], workers=workers)
        for r, (size, kind, message) in zip(ds.records, results):
            if size is None and isinstance(r.image, TarMember):
                # Name the shard and the member, where the user will look for it.
                builder.problems.append(Problem(str(r.image.shard), f"member "
                                                f"{r.image.name!r}: {message}", None,
                                                kind or "bad-image"))
            elif size is None:
                builder.problem(f"image {r.id!r}: {message}", r.row, kind or "bad-image")
            else:
                kept.append(r)
                sizes.append(size)
        ds.records = kept
    if not ds.records and not builder.problems and not builder.duplicates:
        raise DataError(f"{builder.file}: empty dataset (no image-caption rows)")
    problems = sorted(builder.problems + builder.duplicates,
                      key=lambda p: (p.row is None, p.row if p.row is not None else 0))
    counts = [len(r.captions) for r in ds.records]
    size_stats = None
    if sizes:
        size_stats = {"width": _stats([w for w, _ in sizes]),
                      "height": _stats([h for _, h in sizes])}
    summary = {
        "source": str(builder.file),
        "format": ds.format,
        "image_root": str(ds.image_root),
        "split": ds.split,
        "images": len(ds.records),
        "captions": sum(counts),
        "captions_per_image": _stats(counts),
        "image_size": size_stats,
        "problems": len(problems),
        "problems_by_kind": dict(Counter(p.kind for p in problems)),
    }
    ds.problems = problems
    hint = missing_images_hint(ds, images)
    if hint:
        summary["hint"] = hint
    return CheckReport(summary=summary, problems=problems, dataset=ds)
