"""Sizes in messages are in human units (issue 20, item 12)."""

from __future__ import annotations

from gitd.errors import human_bytes


def test_human_bytes():
    assert human_bytes(0) == "0 bytes" and human_bytes(1) == "1 byte"
    assert human_bytes(812) == "812 bytes"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(64 << 20) == "64 MiB"
    assert human_bytes(3.27 * 2**30) == "3.27 GiB"
    assert human_bytes(5 * 2**50) == "5120 TiB"
