"""Environment faults are one line naming the path and the problem, exit 2, with finished work
kept: a full disk (at an atomic write, at the latents file, at a batch of latents), a read-only
output folder (issue 11, class 4; --out naming a file and a missing parent folder of
`evaluate --out` are in test_cli_output_safety.py)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import gitd.stages.arrays
import gitd.stages.encode
import gitd.store
from gitd.cli import main


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "d" / "images").mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.new("RGB", (24, 24), (40 * i, 90, 255 - 40 * i)).save(
            tmp_path / "d" / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "caption": [f"colour {i}"]})
    (tmp_path / "d" / "train.json").write_text(json.dumps(rows))
    return tmp_path / "d" / "train.json"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def distill_args(data, out):
    return ["distill", str(data), "--pairs", "2", "--preset", "tiny", "--no-diffusion",
            "--no-captioner", "--out", str(out), "-q"]


def test_disk_full_while_writing_the_output_keeps_the_old_one(data, tmp_path, capsys,
                                                              monkeypatch):
    out = tmp_path / "out"
    assert main(["select", str(data), "-m", "random", "-k", "3", "--out", str(out), "-q"]) == 0
    before = sorted(p.name for p in (out / "images").iterdir())
    real = gitd.store.os.replace

    def full(src, dst):
        if str(dst).endswith("0001.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(gitd.store.os, "replace", full)
    assert main(["select", str(data), "-m", "random", "-k", "2", "--seed", "1", "--out",
                 str(out), "-q"]) == 2
    line = one_line(capsys)
    assert "0001.png: cannot write (No space left on device); the disk is full" in line
    assert sorted(p.name for p in (out / "images").iterdir()) == before  # untouched
    assert not [p for p in tmp_path.iterdir() if ".gitd-" in p.name]      # staging removed


@pytest.mark.parametrize("where", ["free-space check", "reservation", "batch write"])
def test_disk_full_at_the_latents_file_is_one_line(data, tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "out"
    if where == "free-space check":
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(gitd.stages.arrays.shutil, "disk_usage",
                            lambda p: usage._replace(free=1 << 20))
        # Human units, and the headroom said (issue 20, item 12: it read "needs 0.00 GiB but
        # only 0.00 GiB is free").
        needle = "and gitd keeps 64 MiB more free for everything else, but only 1 MiB is free"
    elif where == "reservation":
        def fallocate(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(gitd.stages.arrays.os, "posix_fallocate", fallocate)
        needle = "latents.npy: cannot write (No space left on device)"
    else:
        real = gitd.stages.encode.os.fsync

        def fsync(fd):  # only the latents file's writes fail
            if os.readlink(f"/proc/self/fd/{fd}").endswith("latents.npy"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)
        monkeypatch.setattr(gitd.stages.encode.os, "fsync", fsync)
        needle = "latents.npy: cannot write (No space left on device)"
    assert main(distill_args(data, out)) == 2
    assert needle in one_line(capsys)
    monkeypatch.undo()
    assert main(distill_args(data, out)) == 0  # space freed: the same command finishes
    assert len(json.loads((out / "annotations.json").read_text())) == 2


def test_read_only_output_folder_is_one_line(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    real = gitd.store.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # root ignores modes: simulate the file system
        if str(dir).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(gitd.store.tempfile, "mkstemp", read_only)
    for args in (distill_args(data, out),
                 ["select", str(data), "-m", "random", "-k", "2", "--out", str(out), "-q"],
                 ["shapes", str(out), "--train", "2", "--test", "1"]):
        assert main(args) == 2
        line = one_line(capsys)
        assert str(out) in line and "Read-only file system" in line and "writable" in line
    assert list(out.iterdir()) == []


def test_an_os_error_from_anywhere_is_one_line(data, tmp_path, capsys, monkeypatch):
    import gitd.methods.coreset as coreset

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "disk"))

    monkeypatch.setattr(coreset, "random_subset", broken)
    assert main(["select", str(data), "-m", "random", "-k", "2", "--out",
                 str(tmp_path / "o"), "-q"]) == 2
    line = one_line(capsys)
    assert line.startswith("gitd select: error: ") and "Input/output error" in line
