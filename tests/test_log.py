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
