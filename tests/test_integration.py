"""The real pipeline: default corpus, real e5 embeddings, real index."""
from __future__ import annotations

import json

import pytest

from rag.evaluation.metrics import relevance

pytestmark = pytest.mark.slow


def _dev(ids: list[str]) -> list[dict]:
    rows = {r["id"]: r for r in map(json.loads, open("eval/dev_questions.jsonl", encoding="utf-8"))}
    return [rows[i] for i in ids]


def test_default_index_shape(default_rag) -> None:
    manifest = default_rag.indexes[0].manifest
    assert manifest["counts"]["documents"] == 86 and manifest["counts"]["aliases"] == 49
    embedding = manifest["embedding"]
    assert (embedding["model"], embedding["dimension"]) == ("intfloat/multilingual-e5-small", 384)
    assert (embedding["query_prefix"], embedding["passage_prefix"]) == ("query: ", "passage: ")


@pytest.mark.parametrize("qid", ["q0001", "q0002", "q0005", "q0065", "q0117", "q0173", "q0232"])
def test_dev_questions_retrieve_the_answer_passage_first(default_rag, qid: str) -> None:
    (q,) = _dev([qid])
    passages = default_rag.retrieve(q["question"], top_k=5)
    gold = {default_rag.resolve_doc_id(d) for d in q["doc_ids"]}
    rel = relevance([(p.doc_id, p.text) for p in passages], gold, q["answers"])
    assert rel[0], f"{qid}: top passage {passages[0].chunk_id} lacks {q['answers']}"


def test_real_answer_with_extractive_backend_is_cited(default_rag) -> None:
    answer = default_rag.ask("北京幸福公益基金会的理事长是谁？", backend="extractive")
    assert not answer.refused and "倪子君" in answer.text
    c = answer.citations[0]
    assert default_rag.resolve_doc_id("doc-018") == c.doc_id == "doc-001"
    assert answer.passages[c.marker - 1].text[c.start : c.end] == c.quote
