"""Metric functions against small hand-computed cases."""
from __future__ import annotations

import math

import pytest

from rag.evaluation import metrics as m
from rag.errors import EvaluationError


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


def test_cmrc_segment_follows_the_official_script() -> None:
    # CJK one token each; Latin/digit runs one token; the script's punctuation (and its NFKC forms) dropped.
    assert m.cmrc_segment(" iPhone 12手机，共148家。") == ["iphone", "12", "手", "机", "共", "148", "家"]
    assert m.cmrc_segment("《三体》-刘慈欣（2008）") == ["三", "体", "刘", "慈", "欣", "2008"]
    assert m.cmrc_segment("共(148)家") == m.cmrc_segment("共（148）家") == ["共", "148", "家"]
    # '.' is not in the script's list: nltk keeps it as a token after a word, inside a number it stays.
    assert m.cmrc_segment("3.5 km.") == ["3.5", "km", "."]
    assert m.cmrc_segment("？！") == []


def test_cmrc_f1_hand_computed() -> None:
    # 北/京/大/学 vs 北/京: common run 2 -> P 2/4, R 2/2 -> F1 2*0.5*1/1.5 = 2/3
    assert m.cmrc_f1("北京大学", ["北京"]) == pytest.approx(2 / 3)
    assert m.cmrc_f1("北京大学。", ["北京大学"]) == 1.0
    # best over golds: 2009/年 vs 2009/年/6/月 -> P 1, R 1/2 -> 2/3; vs 2009/年 -> 1.0
    assert m.cmrc_f1("2009年", ["2009年6月", "2009年"]) == 1.0
    assert m.cmrc_f1("2009年", ["2009年6月"]) == pytest.approx(2 / 3)
    # the run is contiguous (find_lcs): 家/共/148 vs 共/148/家 shares 共/148 -> P 2/3, R 2/3
    assert m.cmrc_f1("家共148", ["共148家"]) == pytest.approx(2 / 3)
    assert m.cmrc_f1("", ["北京"]) == m.cmrc_f1("北京", []) == m.cmrc_f1("上海", ["北京"]) == 0.0


def test_gold_coverage_hand_computed() -> None:
    # gold 倪子君 (3 chars) fully in order inside a longer, cited answer
    assert m.gold_coverage("理事长是倪子君[1]。", ["倪子君"]) == 1.0
    # gold 2009年6月 (normalised: 7 chars) in order with the 6 missing: LCS 6 -> 6/7
    assert m.gold_coverage("成立于2009年月[2]", ["2009年6月"]) == pytest.approx(6 / 7)
    assert m.coverage_correct("成立于2009年月", ["2009年6月"])  # 0.857 >= 0.8
    # 20.9年 -> 209年 keeps 4 of 2009年's 5 chars in order: exactly the 0.8 threshold
    assert m.gold_coverage("20.9年", ["2009年"]) == pytest.approx(0.8) and m.coverage_correct("20.9年", ["2009年"])
    # out of order counts only the longest in-order part: 君子倪 vs 倪子君 -> 1/3
    assert m.gold_coverage("君子倪", ["倪子君"]) == pytest.approx(1 / 3)
    assert not m.coverage_correct("君子倪", ["倪子君"])
    # the best gold wins; a citation marker inside a gold is not a character to find; empty golds ignored
    assert m.gold_coverage("148家", ["一百四十八家", "148家[1]", ""]) == 1.0
    assert m.gold_coverage("148家", []) == m.gold_coverage("", ["148家"]) == 0.0


def _scored(score: float | None, correct: bool) -> dict:
    return {"id": "x", "answerability": score, "metrics": {"candidate_correct": correct}}


def test_risk_coverage_hand_computed() -> None:
    items = [_scored(0.2, False), _scored(0.9, True), _scored(0.5, False), _scored(0.7, True)]
    # answering by score: 0.9 T, 0.7 T, 0.5 F, 0.2 F
    assert m.risk_coverage(items) == [(0.25, 1.0), (0.5, 1.0), (0.75, 2 / 3), (1.0, 0.5)]
    summary = m.risk_coverage_summary(m.risk_coverage(items))
    assert summary == pytest.approx({
        "risk_coverage.auc": 0.25 * (1 + 1 + 2 / 3 + 0.5),
        "risk_coverage.accuracy@0.5": 1.0, "risk_coverage.accuracy@0.8": 0.5, "risk_coverage.accuracy@1.0": 0.5,
    })


def test_risk_coverage_ties_and_missing_scores() -> None:
    # a threshold cannot split tied scores: one cutoff after both 0.8s
    tied = [_scored(0.9, True), _scored(0.8, True), _scored(0.8, False), _scored(0.1, False)]
    assert m.risk_coverage(tied) == [(0.25, 1.0), (0.75, 2 / 3), (1.0, 0.5)]
    assert m.risk_coverage_summary(m.risk_coverage(tied))["risk_coverage.accuracy@0.5"] == pytest.approx(2 / 3)
    assert m.risk_coverage(tied + [_scored(None, True)]) == []
    assert m.risk_coverage([{"id": "y", "metrics": {}}]) == [] and m.risk_coverage([]) == []
    assert m.risk_coverage_summary([]) == {}


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
    return {"answer.accuracy": acc, "answer.exact_match": acc, "answer.f1": acc, "answer.cmrc_f1": acc,
            "answer.coverage_accuracy": acc, "citation.cited": cited,
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


def test_aggregate_new_answer_metrics_and_risk_coverage() -> None:
    out = m.aggregate(ITEMS)
    assert out["answer.cmrc_f1"] == out["answer.coverage_accuracy"] == pytest.approx(2 / 3)
    assert out["by_type.number.answer.cmrc_f1"] == 0.5
    assert not any(k.startswith("risk_coverage.") for k in out)  # no answerability scores, no curve
    scored = [dict(item, answerability=s, metrics={**item["metrics"], "candidate_correct": c})
              for item, s, c in zip(ITEMS, (0.9, 0.3, 0.6, 0.5), (True, False, True, False))]
    out = m.aggregate(scored)
    # by score: a T, c T, d F, b F -> accuracy 1, 1, 2/3, 1/2
    assert out["risk_coverage.auc"] == pytest.approx(0.25 * (1 + 1 + 2 / 3 + 0.5))
    assert out["risk_coverage.accuracy@0.5"] == 1.0 and out["risk_coverage.accuracy@1.0"] == 0.5
    assert "risk_coverage.auc" not in m.aggregate(scored, retrieval_only=True)


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


def test_report_draws_risk_coverage_only_with_scores(tmp_path) -> None:
    from rag.evaluation.report import write_report

    def item(qid: str, answerable: bool, score: float | None, correct: bool) -> dict:
        return {"id": qid, "type": "span" if answerable else "unanswerable", "answerable": answerable,
                "question": "问？", "gold_answers": ["甲"] if answerable else [], "short_answer": "甲",
                "retrieved": [{"relevant": answerable}], "timings": {"retrieve_ms": 1.0, "total_ms": 2.0},
                "answerability": score,
                "metrics": {"answer.accuracy": float(correct), "refused": 0.0, "correct": correct, "candidate_correct": correct}}

    items = [item("a", True, 0.9, True), item("b", True, 0.4, False), item("c", False, 0.2, False)]
    config = {"eval": {"name": "t"}, "rag": {}}
    metrics = {"answer.accuracy": 0.5, **m.risk_coverage_summary(m.risk_coverage(items))}
    report = write_report(tmp_path, metrics, items, config).read_text(encoding="utf-8")
    assert (tmp_path / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"
    # curve (1/3, 1), (2/3, 1/2), (1, 1/3): area (1 + 1/2 + 1/3) / 3 = 0.611
    assert "![risk-coverage curve](risk_coverage.png)" in report and "area under the curve 0.611" in report
    unscored = tmp_path / "unscored"
    unscored.mkdir()
    report = write_report(unscored, metrics, [dict(i, answerability=None) for i in items], config).read_text(encoding="utf-8")
    assert not (unscored / "risk_coverage.png").exists() and "risk_coverage.png" not in report
