"""The prompt every backend runs: wording, passage numbering and fitting to a token limit.

Change :data:`PROMPT_VERSION` whenever the wording below changes, so
evaluation runs that recorded it can be told apart.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.chunking import split_sentences
from rag.errors import ConfigError, QuestionError
from rag.records import Passage
from rag.textsim import bigrams, question_core

PROMPT_VERSION = "zh-3"
REFUSAL = "根据现有资料无法回答这个问题。"
# The rules sit in the system turn: with them after the passages, Qwen2.5-0.5B
# tended to copy the passages out instead of answering.
INSTRUCTION = f"只根据资料简短回答，不要复述整段资料；每句话后用[编号]标注出处，例如“……[1]。”；资料中没有答案时回答：{REFUSAL}"
SYSTEM_PROMPT = "你是“问源”，一个严谨的中文问答助手。你只使用用户给出的资料回答问题，不编造资料以外的内容。" + INSTRUCTION
# "quote": answer in the passage's own words, which the answer check can align exactly.
QUOTE_INSTRUCTION = f"用资料中的原话简短回答，不要改写，不要复述整段资料；每句话后用[编号]标注出处，例如“……[1]。”；资料中没有答案时回答：{REFUSAL}"
#: System prompts by ``generation.prompt_style``.
SYSTEM_PROMPTS = {
    "short": SYSTEM_PROMPT,
    "quote": "你是“问源”，一个严谨的中文问答助手。你只使用用户给出的资料回答问题，不编造资料以外的内容。" + QUOTE_INSTRUCTION,
}
USER_TEMPLATE = "资料：\n{passages}\n\n问题：{question}"
DEFAULT_MAX_PROMPT_CHARS = 1500
_MIN_PASSAGE_CHARS = 30  # a passage cut shorter than this is dropped, not shown

Messages = list[dict[str, str]]


def focus(question: str, text: str, max_chars: int) -> str:
    """The sentences of ``text`` that matter to ``question``, within about ``max_chars``.

    The sentence sharing most of the question's bigrams is kept with its neighbours
    (the next one first: an answer often follows the sentence naming its subject),
    then the best of the rest, in text order; "…" marks what was left out. The
    answer check reads the whole passage, so citation offsets are unaffected.
    """
    spans = split_sentences(text)
    if max_chars <= 0 or len(text) <= max_chars or len(spans) < 2:
        return text
    asked = bigrams(question_core(question))
    scores = [len(bigrams(text[s:e]) & asked) for s, e in spans]
    best = max(range(len(spans)), key=lambda i: (scores[i], -i))
    order = [best] + [j for d in range(1, len(spans)) for j in (best + d, best - d) if 0 <= j < len(spans)]
    order += sorted(range(len(spans)), key=lambda i: -scores[i])
    kept: set[int] = set()
    used = 0
    for i in order:
        size = spans[i][1] - spans[i][0]
        if i in kept or (kept and used + size > max_chars):
            continue
        kept.add(i)
        used += size
    pieces, last = [], -1
    for i in sorted(kept):
        if i != last + 1:
            pieces.append("…")
        pieces.append(text[spans[i][0] : spans[i][1]].strip())
        last = i
    if last != len(spans) - 1:
        pieces.append("…")
    return "".join(pieces)


def format_passages(passages: Sequence[Passage], max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
                    question: str = "", focus_chars: int = 0, focus_from: int = 1) -> str:
    """Number passages ``[1] 《title》 text`` in rank order, within ``max_chars`` of text.

    With ``focus_chars``, each passage from number ``focus_from`` on shows only its
    sentences that matter to ``question`` (:func:`focus`), about that many characters.
    """
    lines: list[str] = []
    left = max_chars
    for number, passage in enumerate(passages, start=1):
        # A table's later row groups carry its header row in their context: show it with them.
        text = passage.chunk.with_context if "table" in passage.location else passage.text
        text = " ".join(text.split()) if "table" not in passage.location else text.strip()
        if focus_chars and number >= focus_from:
            text = focus(question, text, focus_chars)
        if len(text) > left:
            if left < _MIN_PASSAGE_CHARS:
                break
            text = text[: left - 1] + "…"
        left -= len(text)
        title = f"《{passage.title}》 " if passage.title else ""
        lines.append(f"[{number}] {title}{text}")
    return "\n".join(lines) if lines else "（无）"


def build_messages(question: str, passages: Sequence[Passage], max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
                   focus_chars: int = 0, style: str = "short", focus_from: int = 1) -> Messages:
    """Chat messages asking ``question`` about ``passages`` (truncated to ``max_chars``;
    each focused on the question's sentences with ``focus_chars``), in ``style`` (:data:`SYSTEM_PROMPTS`)."""
    passage_text = format_passages(passages, max_chars, question, focus_chars, focus_from)
    user = USER_TEMPLATE.format(passages=passage_text, question=question.strip())
    return [{"role": "system", "content": SYSTEM_PROMPTS[style]}, {"role": "user", "content": user}]


def fit_messages(question: str, passages: Sequence[Passage], max_chars: int, max_tokens: int,
                 count_tokens: Callable[[Messages], int], focus_chars: int = 0, style: str = "short",
                 focus_from: int = 1) -> Messages:
    """The prompt with the passage budget shrunk until ``count_tokens`` says it fits ``max_tokens``."""
    budget = max_chars
    while True:
        messages = build_messages(question, passages, budget, focus_chars, style, focus_from)
        n_tokens = count_tokens(messages)
        if n_tokens <= max_tokens or budget == 0:
            return messages
        budget = max(0, int(budget * max_tokens / n_tokens) - _MIN_PASSAGE_CHARS)


def check_prompt_tokens(n_tokens: int, max_tokens: int) -> None:
    if n_tokens > max_tokens:
        raise QuestionError(
            f"the prompt has {n_tokens} tokens but the model takes {max_tokens}; shorten the question or the passages"
        )


def flatten_messages(messages: Messages) -> str:
    """The message contents as one text, for models without a chat template."""
    return "\n\n".join(m["content"].strip() for m in messages if m["content"].strip())


@dataclass(frozen=True)
class PromptSettings:
    """How retrieved passages become the prompt: the ``generation.prompt_*`` settings, given
    to every engine as one record."""

    #: Passages shown to the model, in rank order (None: all it is given).
    passages: int | None = None
    #: Characters of each passage shown from number ``focus_from`` on: its sentences that
    #: matter to the question (0: whole passages).
    focus: int = 0
    #: The first passage number (1-based) that ``focus`` cuts; those above it are shown whole.
    focus_from: int = 1
    #: The system prompt, a key of :data:`SYSTEM_PROMPTS`.
    style: str = "short"
    #: Characters of passage text in all.
    max_chars: int = DEFAULT_MAX_PROMPT_CHARS

    def __post_init__(self) -> None:
        if self.style not in SYSTEM_PROMPTS:
            raise ConfigError(f"unknown generation.prompt_style {self.style!r}; choose one of: {', '.join(SYSTEM_PROMPTS)}")

    def messages(self, question: str, passages: Sequence[Passage]) -> Messages:
        return build_messages(question, passages[: self.passages], self.max_chars, self.focus, self.style, self.focus_from)

    def fitted(self, question: str, passages: Sequence[Passage], max_tokens: int, count_tokens: Callable[[Messages], int]) -> Messages:
        """:meth:`messages`, with the passage budget shrunk until ``count_tokens`` says it fits ``max_tokens``."""
        return fit_messages(question, passages[: self.passages], self.max_chars, max_tokens, count_tokens, self.focus, self.style,
                            self.focus_from)
