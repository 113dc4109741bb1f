"""Files of a fine-tuning run: the trained parameters and the resumable checkpoint.

Both are single safetensors files written atomically (``gitd.store.atomic_write_bytes``), so a
SIGKILL leaves the previous file or the new one, never a mix; nothing is pickled.

* ``trained.safetensors``: only the DiffFit parameters of the UNet (float32), with the base
  model's id, revision and build seed in the header; ``apply_trained`` loads them onto a freshly
  built base UNet.
* ``checkpoint.safetensors``: the same parameters plus the optimiser state, the gradient
  scaler, torch's RNG states and the step count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gitd.errors import ConfigError, GitdError
from gitd.store import atomic_write_bytes

TRAINED = "trained.safetensors"
CHECKPOINT = "checkpoint.safetensors"
FORMAT = "gitd-difffit-unet/1"


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata={"gitd": json.dumps(meta, sort_keys=True)}))


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("gitd", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise GitdError(f"{path}: not found") from None
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise GitdError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors, meta


# -- trained parameters ------------------------------------------------------------------------
def save_trained(path: Path, params: dict[str, torch.Tensor], base: dict[str, Any]) -> None:
    _save(path, {n: p.float() for n, p in params.items()},
          {"format": FORMAT, "base": base, "trainable": "UNet parameters whose name contains "
                                                        "'bias' or 'norm' (DiffFit)"})


def read_trained(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained tensors and the base model they apply to (``{"model", "revision",
    "seed"}``). ``path``: a run folder or its ``trained.safetensors``."""
    tensors, base, _ = read_trained_run(path)
    return tensors, base


def read_trained_run(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """``read_trained`` plus the file's fingerprint (``gitd.store.file_fingerprint``), from
    one read of the file."""
    import hashlib

    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        if not (path / TRAINED).is_file():
            raise GitdError(f"{path}: no {TRAINED}; is it a finished 'gitd finetune' run? "
                            "(re-run the same finetune command to finish it)")
        path = path / TRAINED
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GitdError(f"{path}: not found") from None
    except OSError as exc:
        raise GitdError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        meta = json.loads((header.get("__metadata__") or {}).get("gitd", "{}"))
        tensors = load(data)
    except Exception as exc:  # safetensors and json raise their own error types
        raise GitdError(f"{path}: not a readable safetensors file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GitdError(f"{path}: not a gitd fine-tuned UNet file (format "
                        f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
                        f"{FORMAT!r})")
    return tensors, meta["base"], hashlib.sha256(data).hexdigest()[:16]


@torch.no_grad()
def apply_trained(unet, tensors: dict[str, torch.Tensor], *, source: str = "trained") -> int:
    """Copy the trained tensors into ``unet`` in place (cast to its dtype); every name must be a
    parameter of the same shape. Returns the number of tensors copied."""
    params = dict(unet.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise ConfigError(f"{source}: {len(missing)} trained tensor(s) are not parameters of "
                          f"this UNet (first: {missing[0]}); was it fine-tuned from another "
                          "base model?")
    for name, value in tensors.items():
        p = params[name]
        if tuple(p.shape) != tuple(value.shape):
            raise ConfigError(f"{source}: {name} has shape {tuple(value.shape)} but the UNet's "
                              f"is {tuple(p.shape)}; was it fine-tuned from another base model?")
        p.copy_(value.to(p.device, p.dtype))
    return len(tensors)


# -- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(path: Path, *, step: int, params: dict[str, torch.Tensor], optimizer,
                    scaler, key: str) -> None:
    state = optimizer.state_dict()
    tensors = {f"param.{n}": p.float() for n, p in params.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        for k, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {"step": int(step), "key": key, "param_groups": state["param_groups"],
            "optim_scalars": scalars,
            "scaler": scaler.state_dict() if scaler is not None else None}
    _save(path, tensors, meta)


def load_checkpoint(path: Path, *, params: dict[str, torch.Tensor], optimizer, scaler,
                    key: str) -> int:
    """Restore the parameters, optimiser, scaler and RNG from ``path``; returns the step."""
    tensors, meta = _load(path)
    if meta.get("key") != key:
        raise GitdError(f"{path}: checkpoint of other settings or data (remove the run folder "
                        "or use another --out)")
    with torch.no_grad():
        for n, p in params.items():
            if f"param.{n}" not in tensors:
                raise GitdError(f"{path}: checkpoint lacks {n}; the file is damaged")
            p.copy_(tensors[f"param.{n}"].to(p.device, p.dtype))
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, entries in meta.get("optim_scalars", {}).items():
        state.setdefault(int(idx), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return int(meta["step"])
