"""Metric functions against small hand-computed cases."""
from __future__ import annotations

import math

import pytest

from rag.evaluation import metrics as m
from rag.evaluation.metrics import EvaluationError


@pytest.mark.parametrize(
    "raw, expected",
    [("  25 万元！", "25万元"), ("２５万元", "25万元"), ("“心战疫”。", "心战疫"), ("iWill Plan_A", "iwillplana"), ("", "")],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert m.normalize_answer(raw) == expected


def test_contains_answer_ignores_empty_gold() -> None:
    assert m.contains_answer("共有 148 家。", ["148家"])
    assert not m.contains_answer("共有148家", [""])
    assert not m.contains_answer("", ["148家"])


def test_relevance_needs_gold_doc_and_answer() -> None:
    passages = [("doc-001", "共有148家"), ("doc-002", "共有148家"), ("doc-001", "别的内容")]
    assert m.relevance(passages, {"doc-001"}, ["148家"]) == [True, False, False]


def test_rank_metrics_hand_computed() -> None:
    rel = [False, True, False, True]
    assert (m.hit_at(rel, 1), m.hit_at(rel, 3)) == (0.0, 1.0)
    assert m.mrr_at(rel, 10) == 0.5
    # DCG = 1/log2(3) + 1/log2(5); ideal with 2 hits = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m.ndcg_at(rel, 10) == pytest.approx(expected)
    assert m.ndcg_at(rel, 10, n_relevant=4) < expected
    assert m.mrr_at(rel, 1) == 0.0


def test_rank_metrics_empty_and_no_hits() -> None:
    for rel in ([], [False] * 10):
        assert m.hit_at(rel, 10) == m.mrr_at(rel, 10) == m.ndcg_at(rel, 10) == 0.0


def test_tied_scores_rank_by_returned_order() -> None:
    # Two passages with the same score: the one the retriever listed first is rank 1.
    tied = [("doc-009", "无关"), ("doc-001", "148家")]
    rel = m.relevance(tied, {"doc-001"}, ["148家"])
    assert m.retrieval_scores(rel)["retrieval.mrr@10"] == 0.5
    scores = m.retrieval_scores([True] + [False] * 9)
    assert set(scores) == set(m.RETRIEVAL_METRICS)
    assert scores["retrieval.hit@1"] == scores["retrieval.ndcg@10"] == 1.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("共有148家[1]。", "共有148家。"),
        ("25万元[1][2]。资料中没有提到发放时间[3]。", "25万元。"),
        ("根据现有资料无法回答该问题。", ""),
        ("倪子君［１］【2】[1, 3]", "倪子君"),
        ("", ""),
    ],
)
def test_short_answer(text: str, expected: str) -> None:
    assert m.short_answer(text) == expected


def test_accuracy_and_exact_match() -> None:
    assert m.answer_accuracy("共有148家。", ["148家"]) == 1.0
    assert m.answer_accuracy("", ["148家"]) == 0.0
    assert m.exact_match("148家。", ["148家"]) == 1.0
    assert m.exact_match("共148家", ["148家"]) == 0.0
    assert m.exact_match("1月23日", ["1月23号", "1月23日"]) == 1.0
    assert m.exact_match("", []) == 0.0


def test_segment_is_cmrc_mixed() -> None:
    assert m.segment("iPhone 12手机，共148家。") == ["iphone", "12", "手", "机", "共", "148", "家"]
    assert m.segment("？！") == []


def test_f1_hand_computed() -> None:
    assert m.f1_score("148家", ["148家"]) == 1.0
    # pred 共/有/148/家 (4 tokens), gold 148/家: common run 2 -> p=1/2, r=1 -> 2/3
    assert m.f1_score("共有148家", ["148家"]) == pytest.approx(2 / 3)
    # best over golds: 1/月/23/日/凌/晨 vs 1/月/23/日 -> p=4/6, r=1 -> 0.8 (the 号 variant gives 0.6)
    assert m.f1_score("1月23日凌晨", ["1月23号", "1月23日"]) == pytest.approx(0.8)
    # the common run is contiguous, as in the CMRC 2018 script: 家/148 vs 148/家 shares a run of 1
    assert m.f1_score("家148", ["148家"]) == pytest.approx(0.5)
    assert m.f1_score("", ["148家"]) == 0.0
    assert m.f1_score("148家", []) == 0.0


def test_percentile_interpolates_and_handles_ties() -> None:
    assert m.percentile([40, 10, 30, 20], 50) == 25
    assert m.percentile([10, 20, 30, 40], 95) == pytest.approx(38.5)
    assert m.percentile([5, 5, 5, 100], 50) == 5
    assert m.percentile([7], 95) == 7
    with pytest.raises(EvaluationError):
        m.percentile([], 50)


def _item(qid: str, qtype: str, answerable: bool, ms: float, **metrics) -> dict:
    return {"id": qid, "type": qtype, "answerable": answerable, "metrics": metrics,
            "timings": {"retrieve_ms": ms, "total_ms": 10 * ms}}


def _retrieval(hit: float) -> dict:
    return {k: hit for k in m.RETRIEVAL_METRICS}


def _full(acc: float, cited: int, correct: int, refused: float) -> dict:
    return {"answer.accuracy": acc, "answer.exact_match": acc, "answer.f1": acc, "citation.cited": cited,
            "citation.correct": correct, "citation.supported": float(correct > 0), "refused": refused}


ITEMS = [
    _item("a", "number", True, 1.0, **_retrieval(1.0), **_full(1.0, 2, 1, 0.0)),
    _item("b", "number", True, 2.0, **_retrieval(0.0), **_full(0.0, 0, 0, 1.0)),
    _item("c", "person", True, 3.0, **_retrieval(1.0), **_full(1.0, 1, 1, 0.0)),
    _item("d", "unanswerable", False, 4.0, **{k: None for k in m.RETRIEVAL_METRICS}, refused=1.0),
]


def test_aggregate_hand_computed() -> None:
    out = m.aggregate(ITEMS)
    assert out["count.questions"] == 4 and out["count.answerable"] == 3 and out["count.unanswerable"] == 1
    assert out["retrieval.hit@1"] == pytest.approx(2 / 3)
    assert out["answer.accuracy"] == pytest.approx(2 / 3)
    assert out["citation.precision"] == pytest.approx(2 / 3)  # 2 good of 3 citations
    assert out["citation.recall"] == pytest.approx(2 / 3)
    assert out["refusal.recall"] == 1.0
    assert out["refusal.false_rate"] == pytest.approx(1 / 3)
    assert out["latency.retrieve.p50_ms"] == 2.5
    assert out["latency.total.p95_ms"] == pytest.approx(38.5)
    assert out["by_type.number.answer.accuracy"] == 0.5
    assert out["by_type.person.answer.f1"] == 1.0
    assert out["by_type.unanswerable.refusal.recall"] == 1.0
    assert "by_type.unanswerable.answer.accuracy" not in out


def test_aggregate_retrieval_only_keys() -> None:
    out = m.aggregate(ITEMS, retrieval_only=True)
    assert all(k.split(".")[0] in {"retrieval", "latency", "count"} for k in out)
    assert set(m.RETRIEVAL_METRICS) <= set(out)


@pytest.mark.parametrize(
    "items, message",
    [
        (ITEMS[3:], "no answerable"),
        (ITEMS[:3], "refusal.recall"),
        ([dict(ITEMS[0], metrics={**ITEMS[0]["metrics"], "citation.cited": 0, "citation.correct": 0}), ITEMS[3]],
         "citation.precision"),
        ([dict(ITEMS[0], timings={"retrieve_ms": 1.0})] + ITEMS[3:], "total_ms"),
        ([dict(ITEMS[0], metrics={**ITEMS[0]["metrics"], "answer.f1": float("nan")})] + ITEMS[3:], "answer.f1"),
    ],
)
def test_aggregate_refuses_uncomputable_metrics(items: list, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        m.aggregate(items)
