"""What every generator shares: the interface, streaming helpers and the facts engines are chosen by.

:class:`Generator` is the interface the answerer calls; :class:`FittedPromptGenerator`
adds prompt fitting for engines that count prompt tokens as a list of ids
(CTranslate2, llama.cpp). :func:`native_bf16` and :func:`is_gguf_path` are the
two facts the engine choice (rag/generation/factory.py) depends on.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rag.errors import ConfigError
from rag.generation.prompt import Messages, PromptSettings, check_prompt_tokens
from rag.records import Passage


class Generator(ABC):
    """Turns a question and its passages into answer text.

    Subclasses implement :meth:`complete`; streaming defaults to one piece.
    """

    backend = "generator"
    #: False when :meth:`complete` cannot follow free-form instructions.
    free_form = True
    #: True when :meth:`stream_complete` takes ``log_probs``, a list it fills with the
    #: log-probability of every token it picks (a signal of the answer check).
    token_log_probs = False
    #: True when :meth:`stream_complete` takes ``usage``, a dict it fills with
    #: ``prompt_tokens`` and ``completion_tokens`` (the counts OpenAI clients read).
    reports_usage = False

    def __init__(self, prompt: PromptSettings | None = None) -> None:
        #: How passages become the prompt (passages shown, focus, system prompt, length).
        self.prompt = prompt or PromptSettings()

    def generate(self, question: str, passages: Sequence[Passage]) -> str:
        """Answer ``question`` from ``passages``, citing them as ``[n]``."""
        return self.complete(self.messages(question, passages))

    def stream(self, question: str, passages: Sequence[Passage], log_probs: list[float] | None = None,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        """Like :meth:`generate`, yielding text pieces as they are decoded.

        ``log_probs``, where given and the engine reports them, receives the
        log-probability of each token picked; ``usage``, where given and the engine
        counts tokens, receives ``prompt_tokens`` and ``completion_tokens``. Both are
        complete once the stream ends.
        """
        messages = self.messages(question, passages)
        extra: dict[str, Any] = {}
        if log_probs is not None and self.token_log_probs:
            extra["log_probs"] = log_probs
        if usage is not None and self.reports_usage:
            extra["usage"] = usage
        yield from self.stream_complete(messages, **extra)

    def messages(self, question: str, passages: Sequence[Passage]) -> Messages:
        return self.prompt.messages(question, passages)

    @abstractmethod
    def complete(self, messages: Messages) -> str:
        """Reply to free-form chat ``messages`` (e.g. a question-rewriting prompt)."""

    def stream_complete(self, messages: Messages) -> Iterator[str]:
        yield self.complete(messages)


class FittedPromptGenerator(Generator):
    """Fits the passages into the model's input limit, counting tokens with ``_encode``.

    For engines that stream text and tokenize to a list of ids: subclasses
    implement :meth:`stream_complete` and :meth:`_encode`, and set ``max_input_tokens``.
    """

    max_input_tokens: int

    def messages(self, question: str, passages: Any) -> Messages:
        return self.prompt.fitted(question, passages, self.max_input_tokens, lambda messages: len(self._encode(messages)))

    def complete(self, messages: Messages) -> str:
        return "".join(self.stream_complete(messages)).strip()

    def _checked_ids(self, messages: Messages) -> list[int]:
        ids = self._encode(messages)
        check_prompt_tokens(len(ids), self.max_input_tokens)
        return ids

    def _encode(self, messages: Messages) -> list[int]:
        raise NotImplementedError


def lstrip_first(pieces: Iterable[str]) -> Iterator[str]:
    """Streamed text pieces without the reply's leading whitespace (and without empty pieces)."""
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        if piece:
            yield piece


def check_prompt_lookup(tokens: Any) -> int:
    """``tokens`` as a prompt-lookup draft length, or a ConfigError saying what fits."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= 64:
        raise ConfigError(f"generation.prompt_lookup must be a whole number from 0 (off) to 64, got {tokens!r}")
    return tokens


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); imports torch.

    Elsewhere bfloat16 matmuls are emulated and slow.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def is_gguf_path(model: str) -> bool:
    """Whether ``model`` names a GGUF file, which only llama.cpp reads."""
    return model.lower().endswith(".gguf")
