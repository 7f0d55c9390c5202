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

from rag.errors import EvaluationError
from rag.normalize import is_cjk
from rag.verify.checks import REFUSAL_CUES

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)
# [1], [1][2], [1, 2], 【1】 and full-width ［１］ (NFKC folds the last into [1]).
_CITATION_MARKER = re.compile(r"[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]")
_SENTENCE = re.compile(r"[^。！？!?\n]*[。！？!?\n]?")
RETRIEVAL_KS = (1, 3, 5, 10)
RETRIEVAL_DEPTH = 10
ANSWER_METRICS = ("answer.accuracy", "answer.exact_match", "answer.f1", "answer.cmrc_f1", "answer.coverage_accuracy")
#: A prediction is "coverage-correct" when it holds this share of a gold answer's characters in order.
COVERAGE_CORRECT = 0.8
#: Coverages at which metrics.json reports the risk-coverage curve's accuracy.
RISK_COVERAGE_POINTS = (0.5, 0.8, 1.0)
RETRIEVAL_METRICS = tuple(f"retrieval.hit@{k}" for k in RETRIEVAL_KS) + ("retrieval.mrr@10", "retrieval.ndcg@10")


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


# The official CMRC 2018 script's punctuation list (cmrc2018_evaluate.py, v5). Its '……' is two
# characters and so never matches one character; it is kept as written to score as the script does.
CMRC_PUNCTUATION = frozenset([
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
])
# Scored answers are NFKC-folded (short_answer), which turns the script's full-width '，？！；（）'
# into ASCII; dropping those images too scores a folded answer as the script scores the raw one.
_CMRC_DROPPED = CMRC_PUNCTUATION | {unicodedata.normalize("NFKC", c) for c in CMRC_PUNCTUATION if len(c) == 1}
# Stands in for nltk.word_tokenize on the script's non-Chinese runs: words and numbers
# (with inner . , ' as in "3.5", "1,000", "don't") are tokens, other symbols one token each.
_LATIN_TOKEN = re.compile(r"\w+(?:[.,'’]\w+)*|[^\w\s]")


def cmrc_segment(text: str) -> list[str]:
    """Tokens as the official CMRC 2018 script segments an answer (``rm_punc=True``).

    Lower-cased and stripped; characters in :data:`CMRC_PUNCTUATION` (and their
    NFKC forms, see ``_CMRC_DROPPED``) are dropped;
    each character in U+4E00..U+9FA5 is one token; the text between them is
    word-tokenized (runs of Latin letters/digits are one token). Unlike
    :func:`segment`, no NFKC folding: the script scores the strings as given.
    """
    tokens: list[str] = []
    run = ""
    for ch in (text or "").lower().strip():
        if ch in _CMRC_DROPPED:
            continue
        if "\u4e00" <= ch <= "\u9fa5":
            tokens.extend(_LATIN_TOKEN.findall(run))
            run = ""
            tokens.append(ch)
        else:
            run += ch
    tokens.extend(_LATIN_TOKEN.findall(run))
    return tokens


def cmrc_f1(prediction: str, golds: Sequence[str]) -> float:
    """The official CMRC 2018 F1 of one prediction, best over the gold answers.

    Reimplements ``calc_f1_score`` of ymcui/cmrc2018 ``cmrc2018_evaluate.py``:
    mixed segmentation (:func:`cmrc_segment`), the longest common *contiguous*
    token run ``l`` (the script's ``find_lcs``), precision ``l/len(pred)``,
    recall ``l/len(gold)``. Example: ``cmrc_f1("北京大学", ["北京"])`` is
    P 0.5, R 1, F1 2/3. No gold answers score 0.0 (the script would fail).
    """
    pred = cmrc_segment(prediction)
    best = 0.0
    for gold in golds:
        tokens = cmrc_segment(gold)
        common = _longest_common_run(tokens, pred)
        if common:
            p, r = common / len(pred), common / len(tokens)
            best = max(best, 2 * p * r / (p + r))
    return best


def _lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence (in order, gaps allowed) of two strings."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def gold_coverage(prediction: str, golds: Sequence[str]) -> float:
    """The largest share, over the gold answers, of a gold's characters that the
    prediction holds in order: LCS(prediction, gold) / len(gold).

    Both sides have citation markers ([1], 【2】) removed, then go through
    :func:`normalize_answer`. A long answer that quotes the gold whole covers it
    fully (1.0); "2009年成立" against gold "2009年" is 1.0, "209年" is 4/5.
    Empty golds are ignored; no usable gold scores 0.0.
    """
    def clean(text: str) -> str:
        return normalize_answer(_CITATION_MARKER.sub("", unicodedata.normalize("NFKC", text or "")))

    pred = clean(prediction)
    best = 0.0
    for gold in golds:
        norm = clean(gold)
        if norm:
            best = max(best, _lcs_length(pred, norm) / len(norm))
    return best


def coverage_correct(prediction: str, golds: Sequence[str]) -> bool:
    """True when :func:`gold_coverage` reaches :data:`COVERAGE_CORRECT` (0.8)."""
    return gold_coverage(prediction, golds) >= COVERAGE_CORRECT


def candidate_correct(candidate: str, golds: Sequence[str]) -> bool:
    """Whether an answer (markers and refusal sentences are removed first) holds a gold
    answer or covers one (:func:`coverage_correct`); never for an unanswerable question
    (no golds). The risk-coverage curve and the answer check's fitting use it."""
    short = short_answer(candidate)
    return bool(golds and short and (contains_answer(short, golds) or coverage_correct(short, golds)))


def risk_coverage(items: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """Selective-answering curve: ``(coverage, accuracy)`` at each score cutoff.

    Items are prediction records with ``answerability`` (higher: more confident
    the question should be answered) and ``metrics["candidate_correct"]`` (the
    candidate answer before the refuse/answer threshold is right; False for an
    unanswerable question). Answering the items scored at or above a cutoff,
    coverage is the share answered and accuracy the share of those that are
    correct. Tied scores cannot be separated by a threshold, so a cutoff lies
    only between different scores. Returns ``[]`` (no curve) when there are no
    items or any item lacks a score or ``candidate_correct``.
    """
    scored = []
    for item in items:
        score = item.get("answerability")
        correct = (item.get("metrics") or {}).get("candidate_correct")
        if score is None or correct is None or not math.isfinite(float(score)):
            return []
        scored.append((float(score), bool(correct)))
    scored.sort(key=lambda pair: -pair[0])
    curve: list[tuple[float, float]] = []
    right = 0
    for n, (score, correct) in enumerate(scored, start=1):
        right += correct
        if n == len(scored) or scored[n][0] != score:
            curve.append((n / len(scored), right / n))
    return curve


def risk_coverage_summary(curve: Sequence[tuple[float, float]]) -> dict[str, float]:
    """``risk_coverage.auc`` and ``risk_coverage.accuracy@<c>`` keys for a curve.

    The area is that of the step function holding each cutoff's accuracy over
    the coverage it adds (with distinct scores: the mean accuracy over answering
    the top 1, 2, ..., n). ``accuracy@c`` is the accuracy at the smallest
    coverage reaching ``c``. No curve gives no keys.
    """
    if not curve:
        return {}
    out = {"risk_coverage.auc": 0.0}
    previous = 0.0
    for coverage, accuracy in curve:
        out["risk_coverage.auc"] += (coverage - previous) * accuracy
        previous = coverage
    for point in RISK_COVERAGE_POINTS:
        reached = next((acc for cov, acc in curve if cov >= point - 1e-9), None)
        if reached is not None:
            out[f"risk_coverage.accuracy@{point}"] = reached
    return out


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
    out.update(risk_coverage_summary(risk_coverage(items)))
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
