"""Reading evaluation result files (``gitd evaluate --out``) defensively for the report.

A results file is produced by a different command, possibly by a different gitd version, and may
be hand-edited; every field except ``summary`` is optional here. Which method and how many pairs
a result belongs to is looked up, in order, in the file itself, its ``config``, and the
``manifest.json`` beside the training set it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitd.errors import GitdError
from gitd.log import get_logger

log = get_logger("report")

_NOT_RESULTS = {"manifest.json", "annotations.json", "settings.json"}
METRICS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean")


@dataclass
class Result:
    """One results file, normalised: ``summary`` maps metric -> {"mean": float, "std": float}."""

    path: Path
    summary: dict[str, dict[str, float]]
    method: str | None = None
    pairs: int | None = None
    train: str | None = None
    train_manifest: Path | None = None
    is_this_set: bool = False  # trained on the distilled set the report is about
    image_model: str | None = None
    text_model: str | None = None
    protocol: str | None = None
    epochs: Any = None
    n_seeds: int | None = None
    selection: str = "last epoch"
    best_on_test: dict[str, dict[str, float]] | None = None
    notes: list[str] = field(default_factory=list)
    variant: str | None = None  # what sets this run apart from others of its method
    config: dict[str, Any] = field(default_factory=dict)  # the training set's manifest config
    # Why the figures no longer describe the training set they name (it changed since), or None.
    stale: str | None = None
    test: dict[str, Any] = field(default_factory=dict)  # the test set: path, images, captions

    @property
    def name(self) -> str:
        """Method (or, without one, the file's name; ``results.json`` goes by its folder)."""
        if self.method:
            return self.method
        return self.path.parent.name if self.path.stem == "results" and self.path.parent.name \
            else self.path.stem

    @property
    def series(self) -> str:
        """The curve this result belongs to in the recall plot."""
        return f"{self.name} ({self.variant})" if self.variant else self.name

    @property
    def untrained(self) -> bool:
        return _as_int(self.epochs) == 0

    @property
    def label(self) -> str:
        parts = [self.series]
        if self.pairs is not None:
            parts.append(f"{self.pairs} pairs")
        if self.untrained:
            parts.append("untrained (0 epochs)")
        if self.stale:
            parts.append("STALE")
        return ", ".join(parts)

    @property
    def test_counts(self) -> tuple[int, int] | None:
        """(images, captions) of the test set, where the results file records them."""
        images, captions = _as_int(self.test.get("images")), _as_int(self.test.get("captions"))
        if images and captions and captions >= images > 0:
            return images, captions
        return None


def _stat(value: Any) -> dict[str, float] | None:
    """``{"mean": m, "std": s}``, a bare number (std 0) or ``[mean, std]``; else None."""
    try:
        if isinstance(value, dict) and "mean" in value:
            std = value.get("std")
            return {"mean": float(value["mean"]), "std": float(std) if std is not None else 0.0}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"mean": float(value), "std": 0.0}
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"mean": float(value[0]), "std": float(value[1])}
    except (TypeError, ValueError):
        return None
    return None


def _summary(raw: Any) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key in METRICS:
        stat = _stat(raw.get(key))
        if stat is not None:
            out[key] = stat
    return out


def _first(*candidates: Any) -> Any:
    for c in candidates:
        if c not in (None, "", [], {}):
            return c
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _model_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = _first(value.get("name"), value.get("id"), value.get("model"))
    return str(value) if value not in (None, "") else None


def _train_file(train: str, results_file: Path) -> Path | None:
    """The annotation file ``train`` names, resolved as ``_manifest_beside`` does, if it is a
    file that exists."""
    raw = Path(train)
    for p in [raw] if raw.is_absolute() else [raw, results_file.parent / raw]:
        if p.is_file():
            return p
    return None


def _staleness(recorded: Any, train_file: Path | None) -> str | None:
    """Why results recorded with training-set fingerprint ``recorded`` do not describe
    ``train_file`` as it is now, or None (same bytes, or nothing to compare)."""
    from gitd.store import file_fingerprint

    if not isinstance(recorded, str) or not recorded or train_file is None:
        return None
    try:
        now = file_fingerprint(train_file, len(recorded))
    except OSError:
        return None
    if now == recorded:
        return None
    return (f"STALE: {train_file} changed since this evaluation (fingerprint {recorded} then, "
            f"{now} now): these figures describe an earlier set; re-run gitd evaluate")


def _manifest_beside(train: str, results_file: Path) -> Path | None:
    """The manifest.json of the training set ``train`` (a file or a folder) names, if any."""
    raw = Path(train)
    tries = [raw] if raw.is_absolute() else [raw, results_file.parent / raw]
    for p in tries:
        folder = p if p.is_dir() else p.parent
        manifest = folder / "manifest.json"
        if manifest.is_file():
            return manifest
    return None


def read_result(path: str | Path, *, this_out: Path | None = None) -> Result:
    """Read one results file; unreadable or summary-less files are a GitdError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GitdError(f"{path}: results file not found") from None
    except IsADirectoryError:
        raise GitdError(f"{path}: is a directory, not a results file") from None
    except OSError as exc:
        raise GitdError(f"{path}: cannot read results file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise GitdError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GitdError(f"{path}: not a results file (expected a JSON object with a \"summary\")")
    summary = _summary(data.get("summary"))
    if not summary:
        raise GitdError(f"{path}: no usable \"summary\" (expected TR@1..IR@10 and r_mean as "
                        "{\"mean\": .., \"std\": ..})")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    encoders = data.get("encoders") if isinstance(data.get("encoders"), dict) else {}

    train_raw = _first(data.get("train"), config.get("train"))
    if isinstance(train_raw, dict):
        train_raw = _first(train_raw.get("path"), train_raw.get("file"))
    train = str(train_raw) if train_raw is not None else None

    res = Result(path=path, summary=summary, train=train)
    res.train_manifest = _manifest_beside(train, path) if train else None
    train_file = _train_file(train, path) if train else None
    if this_out is not None:
        inside = path.resolve().is_relative_to(this_out.resolve())
        same_train = (res.train_manifest is not None
                      and res.train_manifest.resolve() == (this_out / "manifest.json").resolve())
        res.is_this_set = same_train or (inside and res.train_manifest is None)
        if inside and res.train_manifest is None:
            res.train_manifest = this_out / "manifest.json"
            if train_file is None and (this_out / "annotations.json").is_file():
                train_file = this_out / "annotations.json"
    # Results of a set that has changed since (new captions, another run into the same folder)
    # are kept in the table, marked, but are no longer "this set".
    res.stale = _staleness(data.get("train_fingerprint"), train_file)
    if res.stale:
        res.is_this_set = False
        res.notes.append(res.stale)
    sets = data.get("sets") if isinstance(data.get("sets"), dict) else {}
    if isinstance(sets.get("test"), dict):
        res.test = sets["test"]
    elif data.get("test"):
        res.test = {"path": data.get("test")}
    manifest: dict = {}
    if res.train_manifest is not None:
        try:
            loaded = json.loads(res.train_manifest.read_text(encoding="utf-8"))
            manifest = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            res.notes.append(f"{res.train_manifest}: unreadable, method and pairs unknown")

    ablations = manifest.get("ablations")
    if isinstance(ablations, dict):
        off = [f"no {k}" for k, on in ablations.items() if on is False]
        res.variant = ", ".join(off) or None
    if isinstance(manifest.get("config"), dict):
        res.config = manifest["config"]
    res.method = _first(data.get("method"), config.get("method"), manifest.get("method"))
    res.method = str(res.method) if res.method is not None else None
    res.pairs = _as_int(_first(data.get("pairs"), config.get("pairs"), manifest.get("pairs"),
                               data.get("n_train"), data.get("train_pairs")))
    res.image_model = _model_name(_first(encoders.get("image"), encoders.get("image_model"),
                                         data.get("image_model"), config.get("image_model")))
    res.text_model = _model_name(_first(encoders.get("text"), encoders.get("text_model"),
                                        data.get("text_model"), config.get("text_model")))
    res.protocol = _first(data.get("protocol"), config.get("protocol"))
    res.epochs = _first(data.get("epochs"), config.get("epochs"))
    seeds = data.get("seeds")
    res.n_seeds = (len(seeds) if isinstance(seeds, list)
                   else _as_int(_first(seeds, config.get("seeds"))))
    selection = _first(data.get("selection"), data.get("reported"), data.get("reported_epoch"))
    if isinstance(selection, str):
        res.selection = selection
    elif _first(data.get("val"), config.get("val")):
        res.selection = "epoch chosen on the validation split"
    best = _summary(_first(data.get("best_on_test"), data.get("summary_best_on_test")))
    res.best_on_test = best or None
    overlap = data.get("test_overlap")
    if isinstance(overlap, dict) and _as_int(overlap.get("images")):
        res.notes.append(f"TEST OVERLAP: the test set shares {overlap['images']} image(s) with "
                         "the training pairs' source (allowed by --allow-test-overlap); these "
                         "figures overstate retrieval")
    return res


def find_results(out: Path, extra: list[str | Path] | None = None) -> tuple[list[Result], list[str]]:
    """Results for the report: ``OUT/results.json``, ``OUT/results/*.json`` and ``extra`` files.

    Files named explicitly (``extra``) must be readable: a bad one is a GitdError. Files found
    by looking in OUT are skipped with a warning when bad, so a stray JSON file never stops the
    report; the warnings are returned to be shown in the page too.
    """
    found: list[Path] = []
    if (out / "results.json").is_file():
        found.append(out / "results.json")
    if (out / "results").is_dir():
        found.extend(sorted(p for p in (out / "results").glob("*.json") if p.is_file()))
    results: list[Result] = []
    warnings: list[str] = []
    seen: set[Path] = set()
    for p in found:
        seen.add(p.resolve())
        try:
            results.append(read_result(p, this_out=out))
        except GitdError as exc:
            log.warning("skipping %s", exc)
            warnings.append(f"skipped {exc}")
    for p in extra or []:
        p = Path(p)
        if not p.is_dir():
            if p.resolve() not in seen:
                seen.add(p.resolve())
                results.append(read_result(p, this_out=out))
            continue
        # A folder may hold other JSON (an OUT folder has manifest.json, annotations.json), so
        # its files are tried leniently; only a folder with no usable result at all is an error.
        files = [p / "results.json"] if (p / "results.json").is_file() else []
        files += sorted(q for q in (p / "results").glob("*.json") if q.is_file())
        files = files or sorted(q for q in p.glob("*.json")
                                if q.is_file() and q.name not in _NOT_RESULTS)
        # A folder of run folders (e.g. benchmarks/bench_retrieval.py's work folder).
        files = files or sorted(q for q in p.glob("*/results.json") if q.is_file())
        usable = 0
        for q in files:
            if q.resolve() in seen:
                usable += 1
                continue
            seen.add(q.resolve())
            try:
                results.append(read_result(q, this_out=out))
                usable += 1
            except GitdError as exc:
                log.warning("skipping %s", exc)
                warnings.append(f"skipped {exc}")
        if not usable:
            raise GitdError(f"{p}: no results files (with a \"summary\") in this folder")
    _tell_apart(results)
    return results, warnings


# Settings that differ between runs of one method without making them different variants: the
# budget and the seed, where things ran, and what the method registry declares as not affecting
# results (work folders, loader processes, caches). The preset is declared so too (its values
# are what count), but it names the variant best when it differs.
_NOT_VARIANT = {"pairs", "seed", "work", "out", "device", "dtype", "cache", "data", "source"}


def _not_variant() -> set[str]:
    from gitd.registry import neutral_fields

    return _NOT_VARIANT | (neutral_fields() - {"preset", "method"})


def _tell_apart(results: list[Result]) -> None:
    """Runs of one method that share a number of pairs but differ in their settings (e.g. the
    two forgetting tests) get those settings as their variant, so that neither the table nor
    the plot merges them."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.series, []).append(r)
    for members in groups.values():
        pairs = [m.pairs for m in members]
        if len(set(pairs)) == len(pairs):
            continue
        keys = sorted({k for m in members for k in m.config} - _not_variant())
        differ = [k for k in keys
                  if len({json.dumps(m.config.get(k), sort_keys=True) for m in members}) > 1]
        for m in members:
            extra = ", ".join(f"{k}={m.config.get(k)}" for k in differ)
            if extra:
                m.variant = f"{m.variant}, {extra}" if m.variant else extra
