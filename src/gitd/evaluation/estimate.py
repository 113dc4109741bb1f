"""How long an evaluation will take, said before it starts.

The work is counted exactly (seeds x epochs x images per epoch, plus every scoring of the test
and validation sets) and timed on this machine: one training step (forward, backward and the
optimiser's step) and one scoring step of a batch are run on a copy of the model (so no seed's
training changes) and the second of two tries is kept (the first pays for warm-up). It is an
estimate: on a machine shared with other jobs the real rate varies with their load. On a CPU, a run that would take long is told how to
run the CPU settings the README recommends.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from gitd.log import get_logger

log = get_logger("evaluation")

CPU_ADVICE_SECONDS = 15 * 60
CPU_SETTINGS = ("--epochs 5 --image-size 128 (minutes for a few hundred pairs), or "
                "--freeze-image --epochs 50 (the image encoder frozen: seconds per run once its "
                "features are cached)")


@dataclass
class Work:
    """What a run trains and scores, in images."""

    trained: int = 0  # training images over every seed and encoder pair
    scored: int = 0  # test/val images scored over every seed, scoring epoch and pair

    def seconds(self, per_trained: float, per_scored: float) -> float:
        return self.trained * per_trained + self.scored * per_scored


def time_steps(model, pairs, protocol, loss, device) -> tuple[float, float]:
    """(seconds per training image, seconds per scored image), timed on a copy of ``model``
    with one batch of ``pairs``."""
    probe = copy.deepcopy(model).to(device)
    n = min(protocol.batch_size, pairs.n_images)
    idx, x = next(iter(pairs.batches([list(range(n))], workers=0)))
    text = pairs.text_features[[c[0] for c in pairs.captions_of[:n]]].to(device)
    # The optimiser's step is part of a step's cost (AdamW over a large head is not free).
    params = probe.trainable_parameters()
    optimizer = (torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum)
                 if protocol.optimizer == "sgd" else torch.optim.AdamW(params, lr=protocol.lr))

    def train_step():
        probe.train()
        img = probe.encode_images(x.to(device))
        value = loss(img, probe.encode_texts(text), protocol.temperature, None)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    @torch.no_grad()
    def score_step():
        probe.eval()
        probe.encode_images(x.to(device))

    timings = []
    for step in (train_step, score_step):
        took = 0.0
        for _ in range(2):
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            took = time.perf_counter() - start
        timings.append(took / n)
    return timings[0], timings[1]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def announce(work: Work, per_trained: float, per_scored: float, *, device, what: str) -> float:
    """Log the whole run's estimate (and, on a slow CPU run, how to make it short); returns
    the estimated seconds."""
    total = work.seconds(per_trained, per_scored)
    rate = 1.0 / per_trained if per_trained > 0 else float("inf")
    log.info("estimate: %s: %s training images and %s scored, about %s on %s (%.3g training "
             "images/s measured here)", what, f"{work.trained:,}", f"{work.scored:,}",
             _clock(total), device, rate)
    if device.type == "cpu" and total > CPU_ADVICE_SECONDS:
        log.warning("this evaluation runs the GPU protocol on the CPU: about %s. On a CPU use "
                    "the settings the README recommends: %s", _clock(total), CPU_SETTINGS)
    return total
