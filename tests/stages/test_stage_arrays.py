"""Row views and the .npy header reader (``gitd.stages.arrays``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gitd.stages.arrays import RowSubset, ShardedRows, npy_header, npy_ok


def test_npy_header_reads_what_numpy_wrote(tmp_path):
    arr = np.arange(24, dtype=np.float16).reshape(4, 3, 2)
    np.save(tmp_path / "a.npy", arr)
    head = npy_header(tmp_path / "a.npy")
    assert head.shape == (4, 3, 2) and head.dtype == np.float16 and not head.fortran_order
    assert head.data_bytes == arr.nbytes
    assert head.file_bytes == head.offset + arr.nbytes
    assert (tmp_path / "a.npy").read_bytes()[head.offset:] == arr.tobytes()
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError):
        npy_header(tmp_path / "junk.npy")


def test_npy_ok_refuses_a_cut_file_and_other_shapes(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    assert npy_ok(tmp_path / "a.npy", np.float32, (3, 4))
    assert not npy_ok(tmp_path / "a.npy", np.float16, (3, 4))
    assert not npy_ok(tmp_path / "a.npy", np.float32, (4, 3))
    assert not npy_ok(tmp_path / "missing.npy", np.float32, (3, 4))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[:-1])
    assert not npy_ok(tmp_path / "a.npy", np.float32, (3, 4))


def test_sharded_rows_index_like_the_whole_array(tmp_path):
    whole = np.random.default_rng(0).normal(size=(10, 2, 3)).astype(np.float16)
    files = []
    for s, (a, b) in enumerate([(0, 4), (4, 7), (7, 10)]):
        files.append(tmp_path / f"{s}.npy")
        np.save(files[-1], whole[a:b])
    rows = ShardedRows(files)
    assert rows.shape == whole.shape and len(rows) == 10 and rows.dtype == np.float16
    assert np.array_equal(rows[5], whole[5]) and np.array_equal(rows[-1], whole[-1])
    assert np.array_equal(rows[1:3], whole[1:3])  # inside one file: a memory map
    assert np.array_equal(rows[2:9], whole[2:9])  # across files
    assert np.array_equal(rows[::3], whole[::3])
    assert np.array_equal(rows[[9, 0, 5, 5, 6]], whole[[9, 0, 5, 5, 6]])
    flat = rows.reshape(10, -1)
    assert flat.shape == (10, 6) and np.array_equal(flat[[2, 8]], whole.reshape(10, 6)[[2, 8]])
    again = pickle.loads(pickle.dumps(flat))  # what a Ray task receives: file names, not rows
    assert np.array_equal(again[:], whole.reshape(10, 6))
    with pytest.raises(IndexError):
        rows[10]


def test_sharded_rows_refuses_files_that_disagree(tmp_path):
    from gitd.errors import DataError

    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float16))
    np.save(tmp_path / "b.npy", np.zeros((2, 4), np.float16))
    with pytest.raises(DataError, match="b.npy: rows of shape"):
        ShardedRows([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_row_subset_reads_only_its_rows():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    view = RowSubset(X, [1, 2, 3, 7])
    assert view.shape == (4, 2) and len(view) == 4
    assert np.array_equal(view[0:3], X[1:4])  # consecutive rows: one slice
    assert np.array_equal(view[[3, 0]], X[[7, 1]])
    assert np.array_equal(view[3], X[7])
