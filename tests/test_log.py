"""gitd.log.progress: bars on a terminal, periodic log lines elsewhere, nothing when quiet."""

from __future__ import annotations

import io

import pytest

from gitd import log


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    def use(stream):
        monkeypatch.setattr("sys.stderr", stream)
        log.setup_logging(quiet=False)
        return stream
    yield use
    log.setup_logging(quiet=False)


def test_not_a_terminal_gives_log_lines_not_carriage_returns(stderr, monkeypatch):
    err = stderr(io.StringIO())
    monkeypatch.setenv("GITD_PROGRESS_SECONDS", "0")
    bar = log.progress(total=40, desc="seed 0", unit="img")
    assert isinstance(bar, log.LogProgress)
    for _ in range(4):
        bar.set_postfix(epoch="1/2", loss="0.500")
        bar.update(10)
    bar.close()
    text = err.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # one per update; the last already says where it ended
    assert lines[0].startswith("gitd: seed 0: 10/40 img (25%), ")
    assert "img/s" in lines[0] and "left" in lines[0] and lines[0].endswith(
        "[epoch 1/2, loss 0.500]")
    assert lines[-1].startswith("gitd: seed 0: 40/40 img (100%)")
    # iteration works like tqdm's
    assert list(log.progress(range(3), desc="x")) == [0, 1, 2]


def test_log_lines_come_every_interval_only(stderr):
    err = stderr(io.StringIO())
    now = [0.0]
    bar = log.LogProgress(total=100, desc="train", unit="batch", interval=5.0,
                          clock=lambda: now[0])
    for _ in range(12):  # one batch a second
        now[0] += 1.0
        bar.update(1)
    assert [line.split(": ", 2)[2].split(",")[0] for line in err.getvalue().splitlines()] == [
        "5/100 batch (5%)", "10/100 batch (10%)"]
    assert "1 batch/s" in err.getvalue()
    now[0] += 1.0
    bar.update(1)
    bar.close()  # where it ended: 13 batches
    assert err.getvalue().splitlines()[-1].split(": ", 2)[2].startswith("13/100 batch (13%)")
    short = log.LogProgress(total=3, interval=5.0, clock=lambda: 0.0)
    short.update(3)
    short.close()  # finished before the first interval: silent
    assert len(err.getvalue().splitlines()) == 3


def test_terminal_gets_a_tqdm_bar(stderr):
    err = stderr(Terminal())
    bar = log.progress(total=4, desc="bar", unit="img")
    assert not isinstance(bar, log.LogProgress)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert "\r" in err.getvalue() and "bar" in err.getvalue()


def test_quiet_shows_nothing(stderr):
    err = stderr(io.StringIO())
    log.setup_logging(quiet=True)
    for _ in log.progress(range(5), desc="hidden"):
        pass
    assert err.getvalue() == ""


def test_time_left_leaves_the_first_batch_out(stderr):
    """Issue 20, item 8: the first caption batch took the model's first call (weights paged in)
    and the time left said ~1m34s, then 14 s. With warmup, no time left is given until a later
    batch is done, and it is measured from the end of the first."""
    err = stderr(io.StringIO())
    now = [0.0]
    bar = log.LogProgress(total=16, desc="caption", unit="image", interval=0.0,
                          clock=lambda: now[0], warmup=True)
    now[0] = 60.0  # the first batch of 4: a minute, mostly warm-up
    bar.update(4)
    bar.end_warmup()
    now[0] = 70.0  # the next batch: 10 s
    bar.update(4)
    first, second = err.getvalue().splitlines()
    assert "4/16 image" in first and "left" not in first
    assert "8/16 image" in second and "0.4 image/s" in second and "~20s left" in second
    # Without warmup the same run said ~1m10s left: the warm-up counted as work.
    plain = log.LogProgress(total=16, interval=0.0, clock=lambda: now[0])
    now[0] = 130.0
    plain.update(8)
    assert "~1m" in plain.line()


def test_run_units_estimates_from_the_second_chunk(stderr, monkeypatch, tmp_path):
    import time

    from gitd.store import Stage, run_units, unit_path

    err = stderr(io.StringIO())
    monkeypatch.setenv("GITD_PROGRESS_SECONDS", "0")
    stage = Stage.open(tmp_path / "work", "caption", {"v": 1})
    calls = []

    def compute(chunk):
        time.sleep(3.0 if not calls else 0.01)  # the first call warms the model up
        calls.append(chunk)
        return [j for j in chunk]

    def write(j, result):
        unit_path(stage, j).write_text(str(result))

    run_units(stage, 12, 4, compute, write, lambda j: int(unit_path(stage, j).read_text()),
              noun="image")
    lines = [line for line in err.getvalue().splitlines() if "image (" in line]
    assert not any("left" in line for line in lines if "/12 image (33%)" in line)
    eight = next(line for line in lines if "8/12 image" in line)
    # 4 images in ~0.01 s: well under a second left, not the ~3 s the warm-up would make it
    seconds = int(eight.split("~")[1].split("s left")[0].split("m")[-1])
    assert seconds <= 1, eight


def test_a_terminal_bar_restarts_its_clock_after_the_warmup():
    bar = log.tqdm(total=16, file=io.StringIO())
    bar.update(4)
    log.end_warmup(bar)
    assert bar.n == 4 and bar.format_dict["initial"] == 4
    assert bar.format_dict["elapsed"] < 1.0
    bar.close()
