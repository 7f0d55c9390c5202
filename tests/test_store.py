"""JSON-lines record stores read on demand (rag.store)."""
from __future__ import annotations

import pickle

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
