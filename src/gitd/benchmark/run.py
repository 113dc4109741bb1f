"""``gitd benchmark``: make every set, evaluate each the same way, one folder with the table.

Layout of the benchmark folder ``BENCH`` (a gitd output folder, resumed in place):

* ``benchmark.json``: what was asked (data, test, methods, pairs, the evaluation's settings)
  and the cells, in the table's order;
* ``sets/<cell>/``: each set made here (``gitd select`` or ``gitd distill`` output);
* ``results/<cell>.json``: each set's ``gitd evaluate`` results;
* ``cells/<cell>.json``: each cell's state and cost (wall time and device of making the set and
  of evaluating it), written atomically when a step finishes;
* ``table.md``: the comparison table (also printed). ``gitd report BENCH`` renders the table and
  the recall-versus-pairs plot.

A re-run (after Ctrl-C, a crash, a killed process) skips every step that finished: a set whose
cell records it made under the same settings, an evaluation whose seeds are cached. A cell's
cost is the one measured when its step ran.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gitd import __version__
from gitd.benchmark.spec import BenchmarkSettings, Cell, cells_of
from gitd.benchmark.table import benchmark_table
from gitd.errors import ConfigError
from gitd.log import get_logger
from gitd.outdir import Inputs, OutputFolder
from gitd.settings import validate
from gitd.store import atomic_write_json, atomic_write_text, file_fingerprint, fingerprint, read_json

log = get_logger("benchmark")

SPEC_FILE = "benchmark.json"


def machine() -> dict[str, Any]:
    """Where the costs were measured."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(),
                            "host": platform.node()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no torch build with CUDA: a CPU machine
        pass
    return info


def run_benchmark(data, test, out, *, methods: str = BenchmarkSettings.methods,
                  pairs: str = BenchmarkSettings.pairs, extras: list[str] | None = None,
                  set_seed: int = 0, preset: str | None = None, config: str | None = None,
                  images=None, split: str | None = None, test_images=None,
                  test_split: str | None = None, protocol: str = "gitd",
                  **evaluate_settings: Any) -> dict[str, Any]:
    """Make and evaluate every cell (see the module doc); returns ``{"out", "cells",
    "table"}``. ``evaluate_settings``: any ``gitd evaluate`` setting (``seeds``, ``epochs``,
    ``image_model``, ``freeze_image``, ...), the same for every cell."""
    from gitd.data import load_dataset
    from gitd.evaluation.settings import split_overrides

    settings = validate(BenchmarkSettings(methods=methods, pairs=pairs, set_seed=set_seed,
                                          preset=preset, config=config))
    cells = cells_of(settings, list(extras or []))
    split_overrides(evaluate_settings)  # an unknown setting is one line before any work
    train_ds = load_dataset(data, images, split=split)
    test_ds = load_dataset(test, test_images, split=test_split, default_split="test")
    inputs = Inputs().dataset(train_ds, "training data").dataset(test_ds, "test set")
    for c in cells:
        if c.path:
            inputs.file(c.path, f"extra set {c.name}")
    if config:
        inputs.file(config, "config file")
    folder = OutputFolder.prepare(out, command="benchmark", inputs=inputs)
    bench = Path(out)
    for sub in ("sets", "results", "cells"):
        (bench / sub).mkdir(exist_ok=True)
    evaluation = {k: v for k, v in evaluate_settings.items() if v is not None}
    spec = {"gitd_benchmark": __version__, "data": str(data), "split": split, "images":
            str(images) if images else None, "test": str(test), "test_split": test_split,
            "test_images": str(test_images) if test_images else None, "protocol": protocol,
            "evaluate": evaluation, "sets": asdict(settings),
            "cells": [asdict(c) for c in cells], "machine": machine()}
    atomic_write_json(bench / SPEC_FILE, spec)
    make_key = {"data": str(Path(data).resolve()), "split": split,
                "data_file": file_fingerprint(train_ds.source)
                if Path(train_ds.source).is_file() else None,
                "seed": settings.set_seed, "preset": preset,
                "config": {"path": str(config), "bytes": file_fingerprint(config)}
                if config else None,
                "select": _select_settings(protocol, evaluation)}
    records = []
    for i, cell in enumerate(cells):
        log.info("benchmark cell %d of %d: %s", i + 1, len(cells), cell.name)
        records.append(_run_cell(bench, cell, data, test, make_key, protocol, evaluation,
                                 images=images, split=split, test_images=test_images,
                                 test_split=test_split))
    table = benchmark_table(spec, records)
    atomic_write_text(bench / "table.md", table + "\n")
    folder.record_files()
    return {"out": bench, "cells": records, "table": table}


def _select_settings(protocol: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """What selections that embed images share with the evaluation: its image size, its device
    and feature cache. Their encoders are their own (``auto``: the evaluation's default ones;
    a selection has no random-weight option, so a smoke test's encoders are not passed on)."""
    from gitd.retrieval.protocols import get_protocol

    size = evaluation.get("image_size") or get_protocol(protocol).image_size
    out: dict[str, Any] = {"image_size": size, "device": evaluation.get("device", "auto")}
    if evaluation.get("cache"):
        out["cache"] = str(evaluation["cache"])
    return out


def _device(name: str) -> str:
    from gitd.models.registry import resolve_device

    return str(resolve_device(name))


def _run_cell(bench: Path, cell: Cell, data, test, make_key: dict, protocol: str,
              evaluation: dict[str, Any], **where) -> dict[str, Any]:
    from gitd.evaluation.evaluate import evaluate

    record_path = bench / "cells" / f"{cell.name}.json"
    record = read_json(record_path)
    record = record if isinstance(record, dict) else {}
    key = fingerprint({**make_key, "cell": asdict(cell)}, 24)
    if record.get("make_key") != key:
        record = {}
    record.update({"cell": asdict(cell), "make_key": key})
    if cell.kind == "extra":
        train = Path(cell.path)
        record.setdefault("make", {"seconds": 0.0, "device": None, "made": "elsewhere"})
    else:
        train = bench / "sets" / cell.name
        if not (record.get("make") and (train / "manifest.json").is_file()):
            record["make"] = _make(cell, train, data, make_key, where)
            record["status"] = "made"
            atomic_write_json(record_path, record)
    results_path = bench / "results" / f"{cell.name}.json"
    started = time.time()
    results = evaluate(train, test, out=results_path, protocol=protocol,
                       test_images=where["test_images"], test_split=where["test_split"],
                       **evaluation)
    took = round(time.time() - started, 2)
    device = str(results["config"].get("device"))
    if not results.get("from_cache"):
        record["evaluate"] = {"seconds": took, "device": device,
                              "training_seconds": results.get("wall_time_s")}
    elif "evaluate" not in record:  # evaluated before this benchmark: its time as measured then
        record["evaluate"] = {"seconds": results.get("wall_time_s"), "device": device,
                              "training_seconds": results.get("wall_time_s"),
                              "note": "from the cache: training and scoring time when first run"}
    record.update({"status": "done", "results": f"results/{cell.name}.json",
                   "summary": results["summary"], "n_train": results.get("n_train"),
                   "pairs": cell.pairs if cell.pairs is not None else results.get("n_train")})
    atomic_write_json(record_path, record)
    return record


def _make(cell: Cell, out: Path, data, make_key: dict, where: dict) -> dict[str, Any]:
    """Make a cell's set with its method; returns its cost."""
    started = time.time()
    seed = make_key["seed"]
    if cell.kind == "select":
        from gitd.methods.coreset import select_coreset

        settings = dict(make_key["select"], seed=seed)
        select_coreset(data, cell.method, cell.pairs, out, images=where["images"],
                       split=where["split"] or "train", **settings)
        device = settings.get("device", "auto")
    elif cell.kind == "distill":
        from gitd.config import make_config
        from gitd.methods import distill

        config_file = make_key["config"]["path"] if make_key["config"] else None
        config = make_config(preset=make_key["preset"], config_file=config_file,
                             method=cell.method, pairs=cell.pairs, seed=seed)
        distill(data, out, config, images=where["images"], split=where["split"] or "train")
        device = config.device
    else:  # pragma: no cover - extras are not made here
        raise ConfigError(f"cell {cell.name} is not made by gitd")
    return {"seconds": round(time.time() - started, 2), "device": _device(device),
            "method": f"{cell.kind} {cell.method}"}
