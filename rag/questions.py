"""Checks and cleaning for user questions, before any model is called."""
from __future__ import annotations

from rag.errors import QuestionError
from rag.normalize import normalize_text

DEFAULT_MAX_CHARS = 500


def clean_question(question: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Normalise a question; raise QuestionError if it is empty or too long."""
    if not isinstance(question, str):
        raise QuestionError(f"a question must be text, got {type(question).__name__}")
    text = normalize_text(question)
    if not text:
        raise QuestionError("请输入问题：the question is empty")
    if len(text) > max_chars:
        raise QuestionError(f"问题过长：the question has {len(text)} characters, the limit is {max_chars}; shorten it")
    return text
