"""Pure metric functions sharing one answer normaliser.

Per-question functions take plain values (texts, gold answers, relevance
flags) and return numbers; :func:`aggregate` turns per-question values into the
run-level keys of ``metrics.json``. Nothing here touches a model or a file.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

from rag.errors import RagError
from rag.normalize import is_cjk

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)
# [1], [1][2], [1, 2], 【1】 and full-width ［１］ (NFKC folds the last into [1]).
_CITATION_MARKER = re.compile(r"[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]")
_SENTENCE = re.compile(r"[^。！？!?\n]*[。！？!?\n]?")
# Phrases that mark a sentence as "the documents do not say": such a sentence
# is not part of the short answer and is removed before scoring.
REFUSAL_CUES = (
    "无法回答", "无法根据", "无法确定", "无法从", "不能回答", "没有找到", "未找到", "找不到",
    "没有提到", "未提到", "没有提及", "未提及", "没有提供", "未提供", "没有相关", "没有足够",
    "资料中没有", "文档中没有", "材料中没有", "不知道",
)
RETRIEVAL_KS = (1, 3, 5, 10)
RETRIEVAL_DEPTH = 10
ANSWER_METRICS = ("answer.accuracy", "answer.exact_match", "answer.f1")
RETRIEVAL_METRICS = tuple(f"retrieval.hit@{k}" for k in RETRIEVAL_KS) + ("retrieval.mrr@10", "retrieval.ndcg@10")


class EvaluationError(RagError):
    """A question file is malformed or a metric cannot be computed."""


def normalize_answer(text: str) -> str:
    """NFKC, lower case, whitespace and punctuation removed."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text or "").lower())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """True when any non-empty gold answer occurs in ``text`` after normalisation."""
    norm = normalize_answer(text)
    return any(a and a in norm for a in (normalize_answer(x) for x in answers))


def relevance(passages: Sequence[tuple[str, str]], gold_doc_ids: set[str], answers: Sequence[str]) -> list[bool]:
    """Per retrieved ``(doc_id, text)``: from a gold doc and containing a gold answer."""
    return [doc_id in gold_doc_ids and contains_answer(text, answers) for doc_id, text in passages]


def hit_at(rel: Sequence[bool], k: int) -> float:
    """1.0 when a relevant passage is among the first ``k``.

    Ranks are list positions: passages with tied scores keep the order the
    retriever returned, so a run is scored exactly as a user saw it.
    """
    return 1.0 if any(rel[:k]) else 0.0


def mrr_at(rel: Sequence[bool], k: int) -> float:
    for rank, r in enumerate(rel[:k], start=1):
        if r:
            return 1.0 / rank
    return 0.0


def ndcg_at(rel: Sequence[bool], k: int, n_relevant: int | None = None) -> float:
    """Binary-relevance nDCG@k; the ideal ranking puts ``n_relevant`` hits first
    (default: the number of hits found in the list)."""
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(rel[:k]) if r)
    n = sum(1 for r in rel if r) if n_relevant is None else n_relevant
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(n, k)))
    return dcg / ideal if ideal > 0 else 0.0


def retrieval_scores(rel: Sequence[bool]) -> dict[str, float]:
    """All retrieval keys for one answerable question's top-10 relevance flags."""
    out = {f"retrieval.hit@{k}": hit_at(rel, k) for k in RETRIEVAL_KS}
    out["retrieval.mrr@10"] = mrr_at(rel, RETRIEVAL_DEPTH)
    out["retrieval.ndcg@10"] = ndcg_at(rel[:RETRIEVAL_DEPTH], RETRIEVAL_DEPTH)
    return out


def short_answer(text: str) -> str:
    """The answer as scored: citation markers and refusal sentences removed."""
    text = _CITATION_MARKER.sub("", unicodedata.normalize("NFKC", text or ""))
    kept = [s for s in _SENTENCE.findall(text) if s and not any(cue in s for cue in REFUSAL_CUES)]
    return "".join(kept).strip()


def answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when a gold answer is contained in the prediction (both normalised)."""
    return 1.0 if contains_answer(prediction, answers) else 0.0


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(a) for a in answers) else 0.0


def segment(text: str) -> list[str]:
    """CMRC 2018 mixed segmentation: each CJK character is a token, runs of
    other letters and digits are one token, whitespace and punctuation dropped."""
    tokens: list[str] = []
    run = ""
    for ch in unicodedata.normalize("NFKC", text or "").lower():
        if _PUNCT_OR_SPACE.fullmatch(ch) or is_cjk(ch):
            if run:
                tokens.append(run)
                run = ""
            if is_cjk(ch):
                tokens.append(ch)
        else:
            run += ch
    if run:
        tokens.append(run)
    return tokens


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous token run (as in the CMRC script)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    """CMRC 2018 F1: longest common token run over mixed segmentation, best over gold answers."""
    pred = segment(prediction)
    best = 0.0
    for answer in answers:
        gold = segment(answer)
        common = _longest_common_run(gold, pred)
        if common == 0:
            continue
        p, r = common / len(pred), common / len(gold)
        best = max(best, 2 * p * r / (p + r))
    return best


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise EvaluationError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float], key: str, over: str) -> float:
    if not values:
        raise EvaluationError(f"cannot compute {key}: the question set has no {over} questions")
    return sum(values) / len(values)


def _values(items: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for item in items:
        value = item["metrics"].get(key)
        if value is None or not math.isfinite(float(value)):
            raise EvaluationError(f"cannot compute {key}: question {item['id']} has no valid value ({value!r})")
        out.append(float(value))
    return out


def aggregate(items: Sequence[Mapping[str, Any]], retrieval_only: bool = False) -> dict[str, float]:
    """Run-level metrics from per-question prediction records.

    Each item needs ``id``, ``type``, ``answerable``, ``timings`` (``retrieve_ms``,
    ``total_ms``) and ``metrics``. Raises EvaluationError when any metric cannot
    be computed (for example no answerable questions, or no citations at all).
    """
    answerable = [i for i in items if i["answerable"]]
    unanswerable = [i for i in items if not i["answerable"]]
    out: dict[str, float] = {
        "count.questions": len(items),
        "count.answerable": len(answerable),
        "count.unanswerable": len(unanswerable),
    }
    for key in RETRIEVAL_METRICS:
        out[key] = _mean(_values(answerable, key), key, "answerable")
    for stage in ("retrieve", "total"):
        times = []
        for item in items:
            value = item["timings"].get(f"{stage}_ms")
            if value is None or not math.isfinite(float(value)):
                raise EvaluationError(f"cannot compute latency.{stage}: question {item['id']} has no {stage}_ms timing")
            times.append(float(value))
        if not times:
            raise EvaluationError(f"cannot compute latency.{stage}: the question set is empty")
        out[f"latency.{stage}.p50_ms"] = percentile(times, 50)
        out[f"latency.{stage}.p95_ms"] = percentile(times, 95)
    if retrieval_only:
        return out
    for key in ANSWER_METRICS:
        out[key] = _mean(_values(answerable, key), key, "answerable")
    cited = sum(_values(answerable, "citation.cited"))
    if cited == 0:
        raise EvaluationError(
            "cannot compute citation.precision: no answer to an answerable question cited a passage; "
            "check the generator's citations or run with --retrieval-only"
        )
    out["citation.precision"] = sum(_values(answerable, "citation.correct")) / cited
    out["citation.recall"] = _mean(_values(answerable, "citation.supported"), "citation.recall", "answerable")
    out["refusal.recall"] = _mean(_values(unanswerable, "refused"), "refusal.recall", "unanswerable")
    out["refusal.false_rate"] = _mean(_values(answerable, "refused"), "refusal.false_rate", "answerable")
    for qtype in sorted({i["type"] for i in items}):
        group = [i for i in items if i["type"] == qtype]
        out[f"by_type.{qtype}.count"] = len(group)
        group_answerable = [i for i in group if i["answerable"]]
        if group_answerable:
            for key in ANSWER_METRICS:
                out[f"by_type.{qtype}.{key}"] = _mean(_values(group_answerable, key), key, "answerable")
        if len(group_answerable) < len(group):
            group_refusable = [i for i in group if not i["answerable"]]
            out[f"by_type.{qtype}.refusal.recall"] = _mean(_values(group_refusable, "refused"), "refusal.recall", "")
    return out


def mean_by_type(items: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean of one per-question metric per question type, over items that have it."""
    groups: dict[str, list[float]] = {}
    for item in items:
        value = item["metrics"].get(key)
        if value is not None:
            groups.setdefault(item["type"], []).append(float(value))
    return {t: sum(v) / len(v) for t, v in sorted(groups.items())}
