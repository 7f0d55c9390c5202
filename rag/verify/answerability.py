"""One calibrated answerability score from explainable signals.

``features`` turns a question, its passages, the verified candidate answer and
the extractive reader's answer into a few numbers, each in [0, 1]. A logistic
regression fitted on the *tune* splits of both development corpora
(``rag/verify/fit.py``) turns them into P(the answer is right). The model is a
small JSON file beside this module (``model.json``): its feature names, weights,
intercept, the threshold fitted with it, and what it was fitted on. Read it to
see what the check believes; ``answer.strictness`` in ``Config`` moves the
threshold along the risk-coverage curve.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from rag.chunking import split_sentences
from rag.errors import ConfigError
from rag.normalize import fold_script
from rag.records import Citation, Passage
from rag.rewrite import subject_of
from rag.textsim import bigrams, content, phrase_bigrams, question_core
from rag.verify.checks import answer_has_expected_type, event_mentioned, evidence, expected_type

MODEL_PATH = Path(__file__).with_name("model.json")  # fitted on the default generator's tune answers
MODEL_VERSION = 1
#: Models fitted on another generator's tune answers, by the start of its name (an id's last
#: part, or a local folder or GGUF file of it). A larger model answers in other shapes, so a
#: check fitted on the default's answers misjudges it: on the 1.5B's check-split answers,
#: its own fit refuses fewer right answers and more unanswerable questions (README).
GENERATOR_MODELS = {"qwen2.5-coder-1.5b-instruct": Path(__file__).with_name("model-qwen2.5-coder-1.5b.json")}


def model_path_for(generator: str, configured: str = "") -> Path:
    """The answerability model to use: ``configured`` (``answer.model``) where set, else the
    bundled one fitted for ``generator`` (a model id or path), else :data:`MODEL_PATH`."""
    if configured:
        return Path(configured)
    name = Path(str(generator).rstrip("/")).name.lower()
    return next((path for prefix, path in GENERATOR_MODELS.items() if name.startswith(prefix)), MODEL_PATH)

#: The signals, in the order of the model's weights.
FEATURES = (
    "evidence",         # share of the question's bigrams found in the best passage
    "cited_rank",       # 1 / retrieval rank of the best-ranked cited passage (scale-free, unlike raw scores)
    "quote_question",   # share of the question's bigrams in the cited sentence and the sentences beside it
    "quote_subject",    # share of the question subject's bigrams there (or in the title and opening of its article)
    "asked_cover",      # share there of what is asked: the bigrams of the question's phrases outside its
                        # subject, interrogatives and "的" (rag.textsim.phrase_bigrams), less the passage title
    "missing_run",      # longest run of the question's words absent from the cited passages (a name they never mention)
    "subject_exact",    # longest part of the question's subject written out whole in the cited passages, as a share of it
    "align",            # share of the answer's own words (those not in the question) found in the quote
    "answer_new",       # share of the answer's bigrams that are not the question's
    "answer_len",       # length of what the answer adds, log-scaled to [0, 1]
    "type_known",       # the question asks for a checkable kind of answer (year, count, person…)
    "type_ok",          # … and the answer holds it
    "event_ok",         # a date question's event is mentioned by the cited sentence
    "agree",            # the extractive reader picked (nearly) the same sentence
    "explicit_refusal", # the generator said it could not answer (the extractive answer is the candidate)
    "dropped",          # share of the generator's sentences that no passage supports
    "token_prob",       # the generator's mean token probability (geometric) over its reply
    "min_token_prob",   # … its least probable token (a guessed name or number)
    "first_token_prob", # … its first token: where it chose between answering and refusing
    "extractive",       # the candidate is the extractive reader's sentence (a rescue, or the reader's answer
                        # weighed beside the generator's: a model fitted with this signal picks between them)
)
#: Signals that only engines reporting token probabilities give (CTranslate2, transformers);
#: without them a model uses the mean it saw on tune (``AnswerabilityModel.defaults``).
TOKEN_SIGNALS = ("token_prob", "min_token_prob", "first_token_prob")


@dataclass(frozen=True)
class AnswerabilityModel:
    """Logistic regression over :data:`FEATURES`, with the threshold fitted beside it."""

    weights: tuple[float, ...]
    intercept: float
    threshold: float
    features: tuple[str, ...] = FEATURES
    fitted_on: str = ""
    #: Values used for a signal the answer lacks (token probabilities from an engine without them).
    defaults: dict[str, float] = field(default_factory=dict)

    def score(self, values: dict[str, float]) -> float:
        z = self.intercept + sum(w * values.get(name, self.defaults.get(name, 0.0)) for w, name in zip(self.weights, self.features))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def to_dict(self) -> dict:
        return {"version": MODEL_VERSION, "features": list(self.features), "weights": [round(w, 6) for w in self.weights],
                "intercept": round(self.intercept, 6), "threshold": round(self.threshold, 4),
                "defaults": {k: round(v, 4) for k, v in self.defaults.items()}, "fitted_on": self.fitted_on}


def load_model(path: str | Path = "") -> AnswerabilityModel:
    """The answerability model at ``path`` (default: the bundled ``model.json``, the default generator's)."""
    return _load(str(path or MODEL_PATH))


@lru_cache(maxsize=4)
def _load(path: str) -> AnswerabilityModel:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the answerability model {path}: {e}; set answer.model to a file written by rag/verify/fit.py, or leave it empty for the bundled one") from e
    names = tuple(data.get("features", ()))
    unknown = [n for n in names if n not in FEATURES]
    if data.get("version") != MODEL_VERSION or unknown or len(names) != len(data.get("weights", ())):
        raise ConfigError(f"answerability model {path} was fitted for other signals (version {data.get('version')}"
                          f"{', unknown: ' + ', '.join(unknown) if unknown else ''}); refit it with benchmarks/answer_check_fit.py")
    return AnswerabilityModel(weights=tuple(float(w) for w in data["weights"]), intercept=float(data["intercept"]),
                              threshold=float(data["threshold"]), features=names, fitted_on=str(data.get("fitted_on", "")),
                              defaults={k: float(v) for k, v in data.get("defaults", {}).items()})


def _window(passage: Passage, citation: Citation) -> str:
    """The quoted span with the sentence before and after it."""
    spans = split_sentences(passage.text)
    inside = [i for i, (s, e) in enumerate(spans) if s < citation.end and e > citation.start]
    if not inside:
        return citation.quote
    lo, hi = max(0, inside[0] - 1), min(len(spans) - 1, inside[-1] + 1)
    return passage.text[spans[lo][0] : spans[hi][1]]


def _share(part: set[str], whole: set[str]) -> float:
    return len(part & whole) / len(part) if part else 1.0


def _missing_run(text: str, known: set[str]) -> int:
    """Longest run of consecutive bigrams of ``text`` (punctuation removed) that are not in ``known``."""
    t = content(text)
    best = run = 0
    for i in range(len(t) - 1):
        run = run + 1 if t[i : i + 2] not in known else 0
        best = max(best, run)
    return best


def _longest_common(text: str, other: str) -> int:
    """Length of the longest substring of ``text`` that occurs in ``other``."""
    best = 0
    for i in range(len(text)):
        j = i + best + 1
        while j <= len(text) and text[i:j] in other:
            best = j - i
            j += 1
    return best


def features(
    question: str, passages: Sequence[Passage], answer: str, citations: Sequence[Citation],
    extractive: Sequence[Citation] = (), explicit_refusal: bool = False, dropped: float = 0.0,
    token_log_probs: Sequence[float] = (), from_reader: bool = False,
) -> dict[str, float]:
    """The signals of :data:`FEATURES` for a verified ``answer`` (markers removed) and its ``citations``.

    ``token_log_probs`` are the natural-log probabilities of the tokens the generator
    picked (empty when its engine does not report them: the token signals are then left out).
    ``from_reader``: the answer is the extractive reader's, not the generator's.
    """
    core = bigrams(question_core(question))
    qb = bigrams(question)
    ab = bigrams(answer)
    own = ab - qb
    subject_text = subject_of(fold_script(question))  # jieba's tagger reads simplified text best
    subject = bigrams(subject_text)
    pairs = [(passages[c.marker - 1], c) for c in citations if 0 < c.marker <= len(passages)]
    cited = [p for p, _ in pairs]
    windows = [_window(p, c) for p, c in pairs]
    window_b = set().union(*(bigrams(w) for w in windows))
    quote_b = set().union(*(bigrams(c.quote) for c in citations))
    known = set().union(*(bigrams(p.chunk.with_context) | bigrams(p.title) for p in cited))
    cited_text = content(" ".join(f"{p.title} {p.chunk.with_context}" for p in cited))
    asked = phrase_bigrams(question, subject_text) - subject - set().union(*(bigrams(p.title) for p in cited))
    kind = expected_type(question)
    folded_question = fold_script(question)
    new_chars = len(content("".join(ch for ch in fold_script(answer) if ch not in folded_question)))
    agree = 0.0
    for c in citations:
        for e in extractive:
            if e.chunk_id == c.chunk_id and e.start < c.end and e.end > c.start:
                agree = 1.0
    if not agree and extractive and own:
        agree = _share(own, set().union(*(bigrams(e.quote) for e in extractive)))
    tokens = {}
    if token_log_probs:
        tokens = {"token_prob": math.exp(sum(token_log_probs) / len(token_log_probs)),
                  "min_token_prob": math.exp(min(token_log_probs)), "first_token_prob": math.exp(token_log_probs[0])}
    return tokens | {
        "evidence": evidence(question, passages),
        "cited_rank": 1.0 / min((c.marker for c in citations), default=len(passages) or 1),
        "quote_question": _share(core, window_b) if core else 0.0,
        # An article names its subject once, at the top: its title and opening count with the window.
        "quote_subject": _share(subject, window_b | set().union(*(bigrams(f"{p.title} {p.chunk.context}") for p in cited))) if subject else 1.0,
        "asked_cover": _share(asked, window_b),
        "missing_run": min(1.0, _missing_run(question_core(question), known) / 6),
        # "中国慈善联合会" is not "中国网络社会组织联合会": bigram shares miss a swapped name, this does not.
        "subject_exact": _longest_common(content(subject_text), cited_text) / len(content(subject_text)) if content(subject_text) else 1.0,
        "align": _share(own, quote_b) if own else 0.0,
        "answer_new": len(own) / len(ab) if ab else 0.0,
        "answer_len": min(1.0, math.log1p(new_chars) / math.log1p(60)),
        "type_known": 1.0 if kind else 0.0,
        "type_ok": 1.0 if kind and answer_has_expected_type(question, answer) else 0.0,
        "event_ok": 1.0 if event_mentioned(question, windows) else 0.0,
        "agree": agree,
        "explicit_refusal": 1.0 if explicit_refusal else 0.0,
        "dropped": dropped,
        "extractive": 1.0 if from_reader else 0.0,
    }
