"""JSON-lines record stores read on demand (rag.store)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

import pytest

from rag import store
from rag.errors import IndexLoadError
from rag.records import Chunk, Document

CHUNKS = [Chunk(id=f"d{i}-c0", doc_id=f"d{i}", text=f"第{i}段：武汉市红十字会接收捐款{i}万元。\n换行", start=0, end=20,
                title="标题", context="上下文" if i % 2 else "", location={"page": i + 1}) for i in range(50)]


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "chunks.jsonl"
    assert store.write(p, CHUNKS) == len(CHUNKS)
    return p


def test_records_come_back_equal_in_any_order(path) -> None:
    s = store.JsonlStore(path, Chunk)
    assert len(s) == 50 and s[0] == CHUNKS[0] and s[49] == CHUNKS[49] and s[-1] == CHUNKS[-1]
    assert s[10:13] == CHUNKS[10:13] and list(s) == CHUNKS and s == CHUNKS
    with pytest.raises(IndexError):
        s[50]


def test_documents_keep_tuples(tmp_path) -> None:
    docs = [Document(id="doc-001", text="正文", title="题", aliases=("doc-007",), spans=((0, 2, {"page": 1}),))]
    store.write(tmp_path / "documents.jsonl", docs)
    assert store.JsonlStore(tmp_path / "documents.jsonl", Document)[0] == docs[0]


def test_a_store_without_offsets_or_with_stale_ones_is_read_again(path) -> None:
    side = store.offsets_path(path)
    side.unlink()  # an index written before stores had offsets
    assert store.JsonlStore(path, Chunk) == CHUNKS
    store.write(path, CHUNKS[:49])  # new file...
    store.write(path.with_name("other.jsonl"), CHUNKS)
    store.offsets_path(path.with_name("other.jsonl")).replace(side)  # ...with another file's offsets
    assert store.JsonlStore(path, Chunk) == CHUNKS[:49]


def test_a_cut_file_is_refused_and_a_garbled_record_says_rebuild(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="middle of a record"):
        store.JsonlStore(path, Chunk)
    lines = data.splitlines(keepends=True)
    lines[3] = b"{garbled" + b" " * (len(lines[3]) - 9) + b"\n"  # same length: the offsets still agree
    path.write_bytes(b"".join(lines))
    s = store.JsonlStore(path, Chunk)
    assert s[2] == CHUNKS[2]
    with pytest.raises(IndexLoadError, match="record 3 is unreadable.*rag index build"):
        s[3]


def test_empty_store_and_pickling(tmp_path, path) -> None:
    store.write(tmp_path / "empty.jsonl", [])
    assert len(store.JsonlStore(tmp_path / "empty.jsonl", Chunk)) == 0
    again = pickle.loads(pickle.dumps(store.JsonlStore(path, Chunk)))
    assert again[7] == CHUNKS[7]


def test_a_file_cut_after_loading_says_rebuild(path) -> None:
    s = store.JsonlStore(path, Chunk)
    path.write_bytes(path.read_bytes()[:-30])  # the last record loses its end while served
    assert s[0] == CHUNKS[0]
    with pytest.raises(IndexLoadError, match="record 49 is unreadable.*inside the record"):
        s[49]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_rows_are_the_arrays_rows(tmp_path, dtype) -> None:
    array = np.random.default_rng(3).standard_normal((1000, 24)).astype(dtype)
    np.save(tmp_path / "v.npy", array)
    rows = store.NpyRows(tmp_path / "v.npy")
    positions = [999, 0, 500, 500, 17]
    got = rows.rows(positions)
    assert got.dtype == dtype and np.array_equal(got, array[positions])
    assert rows.rows([]).shape == (0, 24)
    with pytest.raises(IndexError):
        rows.rows([1000])
    again = pickle.loads(pickle.dumps(rows))
    assert np.array_equal(again.rows([5]), array[[5]])
    data = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="shorter than its 1000 x 24 header"):
        store.NpyRows(tmp_path / "cut.npy")


def test_served_records_and_rows_leave_their_files_unmapped(tmp_path, path) -> None:
    """Through a memory map, one record read maps a whole page-cache folio (about 2 MB) into
    the process; read with pread, the files never appear among the process's mappings."""
    np.save(tmp_path / "v.npy", np.zeros((5000, 8), dtype=np.float32))
    s, rows = store.JsonlStore(path, Chunk), store.NpyRows(tmp_path / "v.npy")
    assert [s[i] for i in range(50)] == CHUNKS and rows.rows(list(range(0, 5000, 7))).shape == (715, 8)
    mapped = Path("/proc/self/maps").read_text()
    assert str(path) not in mapped and str(tmp_path / "v.npy") not in mapped
