"""BM25 tokens made in parallel (a process pool, or a build engine's tasks) equal the serial ones."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rag import build, dense
from rag.build import build_index, tokenize_texts
from rag.chunking import chunk_documents
from rag.config import Config
from rag.corpus import load_documents
from rag.lexical import tokenize
from tests.conftest import FakeEmbedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = load_documents(["data/articles.txt"])
    return [c.text for c in chunk_documents(docs, 300, 1, 80)]


class CountingPool(build.ProcessPoolExecutor):
    started = 0

    def __init__(self, *args, **kwargs) -> None:
        CountingPool.started += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def pools(monkeypatch) -> type[CountingPool]:
    CountingPool.started = 0
    monkeypatch.setattr(build, "ProcessPoolExecutor", CountingPool)
    return CountingPool


def test_pool_tokens_equal_serial_tokens(texts, pools, monkeypatch) -> None:
    monkeypatch.setattr(build, "PARALLEL_TOKENIZE_MIN", 0)
    assert tokenize_texts(texts, workers=2) == [tokenize(t) for t in texts]
    assert pools.started == 1


def test_small_inputs_are_tokenised_in_process(texts, pools) -> None:
    assert len(texts) < build.PARALLEL_TOKENIZE_MIN
    assert tokenize_texts(texts, workers=2) == [tokenize(t) for t in texts]
    assert tokenize_texts(texts * 4, workers=1)[: len(texts)] == [tokenize(t) for t in texts]
    assert pools.started == 0


def _questions() -> list[str]:
    return [json.loads(line)["question"] for line in open("eval/dev_questions.jsonl", encoding="utf-8")]


def test_parallel_build_has_the_serial_bm25_scores(tmp_path, texts, pools, monkeypatch) -> None:
    config = Config().with_overrides(embedding={"model": FakeEmbedder.model_name})
    serial = build_index(["data/articles.txt"], tmp_path / "serial", config, FakeEmbedder, tokenize_workers=1)
    monkeypatch.setattr(build, "PARALLEL_TOKENIZE_MIN", 0)
    parallel = build_index(["data/articles.txt"], tmp_path / "parallel", config, FakeEmbedder, tokenize_workers=2)
    assert pools.started == 1
    for question in _questions():
        np.testing.assert_array_equal(parallel.lexical.scores(question), serial.lexical.scores(question))
    timings = parallel.manifest["timings"]
    assert {"chunk_s", "embed_s", "faiss_s", "tokenize_s", "bm25_s", "total_s"} <= set(timings)


class TokenizingEngine:
    """A build engine with its own ``tokenize`` (as RayEngine has), recording where rows ran."""

    name = "fake-cluster"

    def __init__(self) -> None:
        self.tokenized = 0
        self.placement: dict[str, dict[str, int]] = {}

    def chunk_documents(self, docs, chunking):
        return chunk_documents(docs, chunking.max_chars, chunking.overlap_sentences, chunking.context_chars)

    def build_faiss(self, vectors, kind):
        return dense.build_faiss(vectors, kind)

    def tokenize(self, texts):
        self.tokenized += len(texts)
        self.placement["tokenize"] = {"node-a": len(texts) // 2, "node-b": len(texts) - len(texts) // 2}
        return [tokenize(t) for t in texts]


def test_build_uses_the_engines_tokenize(tmp_path, texts, pools) -> None:
    config = Config().with_overrides(embedding={"model": FakeEmbedder.model_name})
    engine = TokenizingEngine()
    built = build_index(["data/articles.txt"], tmp_path / "idx", config, FakeEmbedder, engine=engine)
    assert engine.tokenized == len(texts) == len(built.chunks)
    assert pools.started == 0
    assert built.manifest["build_engine"] == "fake-cluster"
    assert built.manifest["placement"] == {"tokenize": {"node-a": len(texts) // 2, "node-b": len(texts) - len(texts) // 2}}
    local = build_index(["data/articles.txt"], tmp_path / "local", config, FakeEmbedder)
    assert "placement" not in local.manifest
    question = _questions()[0]
    np.testing.assert_array_equal(built.lexical.scores(question), local.lexical.scores(question))
