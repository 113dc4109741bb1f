"""How many pairs go through the UNet at once (the micro-batch), from the GPU's free memory.

The step's loss is the whole batch's (gradient caching, ``gitd.stages.finetune.train``): the
micro-batch only decides how many pairs' activations are alive at once, not the result. With
``--micro-batch auto`` on CUDA, the trainer measures the peak memory of the gradient pass for 1
and for 2 pairs (``Trainer.probe_peak``: the only CUDA calls), which gives a fixed part and a
per-pair part (:func:`per_pair_from_probe`), and takes the largest micro-batch that fits the
free memory with a margin (:func:`choose_micro_batch`), split evenly (:func:`split_sizes`).
Everything here except the probe is a pure function of byte counts, tested with made-up
figures.
"""

from __future__ import annotations

import math

from gitd.errors import ConfigError

GIB = 1024 ** 3
# Left free besides what the probe measured: the allocator's fragmentation, the optimiser's
# update and the CUDA context's growth.
MARGIN_BYTES = int(1.0 * GIB)
# What auto leaves unused of the free memory besides the margin (the probe measures two
# sizes only; activations do not grow exactly linearly).
HEADROOM = 0.9


def per_pair_from_probe(peak_one: int, peak_two: int) -> tuple[int, int]:
    """(fixed bytes, bytes per pair) of the gradient pass, from its peak above the baseline
    for a micro-batch of 1 pair and of 2 pairs."""
    per_pair = max(1, int(peak_two) - int(peak_one))
    return max(0, int(peak_one) - per_pair), per_pair


def choose_micro_batch(free: int, per_pair: int, local_batch: int, *, fixed: int = 0,
                       margin: int = MARGIN_BYTES, headroom: float = HEADROOM) -> int:
    """The micro-batch for ``local_batch`` pairs: as many pairs as fit in ``free`` bytes (less
    ``margin``, times ``headroom``, less the ``fixed`` part) at ``per_pair`` bytes each, then
    evened out so that the same number of passes carries no more than needed (128 pairs that
    fit 50 at a time run as 43 + 43 + 42, not 50 + 50 + 28). At least 1."""
    if local_batch < 1:
        raise ValueError(f"local_batch must be >= 1, got {local_batch}")
    fits = int(((free - margin) * headroom - fixed) // max(1, per_pair))
    fits = max(1, min(local_batch, fits))
    passes = math.ceil(local_batch / fits)
    return math.ceil(local_batch / passes)


def split_sizes(local_batch: int, micro: int) -> list[int]:
    """Sizes of the micro-batches of ``local_batch`` pairs, at most ``micro`` each, as even as
    the count allows (10 by 4: 4, 3, 3)."""
    if micro < 1 or local_batch < 1:
        raise ValueError(f"need positive sizes, got {local_batch} by {micro}")
    passes = math.ceil(local_batch / micro)
    base, extra = divmod(local_batch, passes)
    return [base + 1] * extra + [base] * (passes - extra)


def fixed_micro_batch(micro_batch: int | str, accumulation: int, local_batch: int) -> int | None:
    """The micro-batch the settings fix, or None for ``auto`` to decide. ``micro_batch`` N
    (capped at the local batch) or, with ``gradient_accumulation_steps`` k > 1, the local batch
    split k ways (which must divide it); giving both is an error."""
    if accumulation > 1:
        if micro_batch != "auto":
            raise ConfigError(f"give --micro-batch ({micro_batch}) or "
                              f"--gradient-accumulation-steps ({accumulation}), not both")
        if local_batch % accumulation:
            raise ConfigError(f"batch_size per process {local_batch} must be divisible by "
                              f"gradient_accumulation_steps {accumulation}")
        return local_batch // accumulation
    if micro_batch == "auto":
        return None
    return min(int(micro_batch), local_batch)
