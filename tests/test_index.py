from __future__ import annotations

import json

import numpy as np
import pytest

from rag import dense
from rag.build import build_index
from rag.errors import IndexLoadError
from rag.index import Index
from rag.pipeline import RAG


def test_faiss_flat_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:20] + 0.1 * rng.normal(size=(20, 32)).astype(np.float32)
    index = dense.build_faiss(vecs, "flat")
    scores, positions = dense.search(index, queries, 10)
    brute = queries @ vecs.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    assert (positions == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_indexes_find_most_neighbours(kind: str) -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = dense.search(dense.build_faiss(vecs, "flat"), vecs[:50], 10)[1]
    approx = dense.search(dense.build_faiss(vecs, kind), vecs[:50], 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall >= 0.8


def _build(tmp_path, config, embedder, **kw):
    calls = []

    def factory():
        calls.append(1)
        return embedder

    index = build_index(["tests/data/mini.txt"], tmp_path / "idx", config, factory, **kw)
    return index, calls


def test_build_save_load_round_trip(tmp_path, fake_config, fake_embedder) -> None:
    built, calls = _build(tmp_path, fake_config, fake_embedder)
    assert calls == [1]
    loaded = Index.load(tmp_path / "idx", verify_hashes=True)
    assert loaded.chunks == built.chunks and loaded.documents == built.documents
    np.testing.assert_array_equal(loaded.vectors, built.vectors)
    assert loaded.manifest["counts"] == {"documents": 3, "chunks": len(built.chunks), "aliases": 1}
    assert loaded.manifest["embedding"]["model"] == "fake-bigram"
    # unchanged corpus: no embedding at all on rebuild
    again, calls = _build(tmp_path, fake_config, fake_embedder)
    assert calls == [] and again.manifest["created"] == built.manifest["created"]


def test_load_refuses_mismatch_and_damage(tmp_path, fake_config, fake_embedder) -> None:
    _build(tmp_path, fake_config, fake_embedder)
    folder = tmp_path / "idx"
    with pytest.raises(IndexLoadError, match="built with embedding model 'fake-bigram'.*rag index build"):
        Index.load(folder, embedding_model="intfloat/multilingual-e5-small")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="format version 99"):
        Index.load(folder)
    manifest["format_version"] = 1
    manifest["counts"]["chunks"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="inconsistent"):
        Index.load(folder)
    manifest["counts"]["chunks"] -= 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = (folder / "dense.faiss").read_bytes()
    (folder / "dense.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexLoadError, match="corrupt or truncated"):
        Index.load(folder)
    with pytest.raises(IndexLoadError, match="no index"):
        Index.load(tmp_path / "nothing")


def test_changed_corpus_reuses_vectors(tmp_path, fake_config, fake_embedder) -> None:
    _build(tmp_path, fake_config, fake_embedder)
    src = tmp_path / "more.txt"
    src.write_text(open("tests/data/mini.txt", encoding="utf-8").read() + "新增 的 一篇 文章 ， 讲述 志愿者 的 故事 。\n", encoding="utf-8")

    class Counting(type(fake_embedder)):
        seen: list[str] = []

        def embed_passages(self, texts):
            self.seen.extend(texts)
            return super().embed_passages(texts)

    counting = Counting()
    index = build_index([src], tmp_path / "idx", fake_config, lambda: counting)
    assert counting.seen == ["新增的一篇文章，讲述志愿者的故事。"]
    assert index.manifest["counts"]["documents"] == 4


def test_rag_retrieve_with_fake_embedder(tmp_path, fake_config, fake_embedder) -> None:
    index, _ = _build(tmp_path, fake_config, fake_embedder)
    rag = RAG([index], fake_config, embedder=fake_embedder)
    passages = rag.retrieve("腾讯基金会计划出资多少？", top_k=2)
    assert passages[0].doc_id == "doc-001" and "出资3亿元" in passages[0].text
    assert passages[0].lexical_score is not None and passages[0].dense_score is not None
    assert rag.resolve_doc_id("doc-003") == "doc-001"


def test_id_map_decodes_the_documents_once_per_loaded_index(tmp_path, fake_config, fake_embedder, monkeypatch) -> None:
    # Uploads ask for the ids beside the KB at every file: a 100k-document index must not decode them each time.
    _build(tmp_path, fake_config, fake_embedder)
    loaded = Index.load(tmp_path / "idx")
    decoded = []
    store_cls = type(loaded.documents)
    real = store_cls._decode
    monkeypatch.setattr(store_cls, "_decode", lambda self, *a, **k: decoded.append(1) or real(self, *a, **k))
    first = loaded.id_map()
    n = len(decoded)
    assert n > 0 and first["doc-003"] == "doc-001" and first["doc-001"] == "doc-001"
    assert loaded.id_map() == first and len(decoded) == n  # the second call decodes nothing


def test_alias_map_reads_no_document_when_the_manifest_counts_no_aliases(tmp_path, fake_config, fake_embedder) -> None:
    """Start-up at 1M chunks: with no folded duplicates there is nothing to map, so the
    documents are not decoded; with some, their aliases resolve after a save and load."""
    with_dups, _ = _build(tmp_path, fake_config, fake_embedder)
    assert with_dups.manifest["counts"]["aliases"] == 1
    loaded = Index.load(tmp_path / "idx")
    assert loaded.aliases() == {"doc-003": "doc-001"}

    class Unread(list):
        def __iter__(self):
            raise AssertionError("documents decoded")

    src = tmp_path / "single.txt"
    src.write_text("正文 内容\n一篇 只 出现 一次 的 文章 。\n", encoding="utf-8")
    index = build_index([src], tmp_path / "single", fake_config, lambda: fake_embedder)
    assert index.manifest["counts"]["aliases"] == 0
    index.documents = Unread(index.documents)
    rag = RAG([index], fake_config, embedder=fake_embedder)
    assert rag.aliases == {} and rag.resolve_doc_id("doc-001") == "doc-001"


def test_vector_rows_read_the_loaded_file_and_follow_replaced_vectors(tmp_path, fake_config, fake_embedder) -> None:
    import dataclasses

    built, _ = _build(tmp_path, fake_config, fake_embedder)
    loaded = Index.load(tmp_path / "idx")
    positions = [2, 0, 1]
    assert np.array_equal(loaded.vector_rows(positions), np.asarray(built.vectors)[positions])
    doubled = dataclasses.replace(loaded, vectors=np.asarray(loaded.vectors) * 2)  # not the file any more
    assert np.allclose(doubled.vector_rows(positions), 2 * np.asarray(built.vectors)[positions])
    data = (tmp_path / "idx" / "vectors.npy").read_bytes()
    (tmp_path / "idx" / "vectors.npy").write_bytes(data[:-8])
    with pytest.raises(IndexLoadError, match="vectors"):
        Index.load(tmp_path / "idx")
