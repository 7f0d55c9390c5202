"""Answer generation: one prompt, one interface, three backends.

``CausalGenerator`` runs a chat model (Qwen2.5 by default) through its chat
template, ``Seq2SeqGenerator`` runs an encoder-decoder (T5, mT5, mT0, BART) on
the same prompt flattened to text, and ``ExtractiveGenerator`` needs no model:
it quotes the passage sentence that shares most character bigrams with the
question. All decoding is greedy, so the same input gives the same answer.
The causal backend runs on transformers, CTranslate2 or llama.cpp
(``generation.engine``).

Where things are:
    prompt.py      the prompt wording (PROMPT_VERSION), passage numbering, fitting to a token limit
    base.py        the ``Generator`` interface, streaming helpers, the bf16 probe and ``is_gguf_path``
    hf.py          the transformers engine: ``CausalGenerator``, ``Seq2SeqGenerator``
    extractive.py  ``ExtractiveGenerator``
    ct2.py         the CTranslate2 engine: ``CTranslate2Generator``
    llamacpp.py    the llama.cpp engine: ``LlamaCppGenerator``, ``gguf_file``, ``q8_copy``
    factory.py     ``build_generator`` and the engine policy, ``choose_engines``

Importing this package loads neither torch, ctranslate2 nor llama_cpp; each
is imported when a model that needs it is loaded.

Example:
    >>> generator = build_generator("extractive", None)
    >>> generator.generate("谁出资？", passages)  # doctest: +SKIP
    '腾讯基金会计划出资3亿元[1]。'
"""
from __future__ import annotations

from rag.generation.base import Generator
from rag.generation.extractive import ExtractiveGenerator
from rag.generation.hf import CausalGenerator, Seq2SeqGenerator
from rag.generation.prompt import (
    DEFAULT_MAX_PROMPT_CHARS,
    PROMPT_VERSION,
    REFUSAL,
    PromptSettings,
    build_messages,
    focus,
    format_passages,
)
from rag.generation.factory import ENGINES, build_generator, choose_engines

__all__ = [
    "PROMPT_VERSION",
    "REFUSAL",
    "PromptSettings",
    "DEFAULT_MAX_PROMPT_CHARS",
    "ENGINES",
    "Generator",
    "CausalGenerator",
    "Seq2SeqGenerator",
    "ExtractiveGenerator",
    "build_generator",
    "build_messages",
    "choose_engines",
    "focus",
    "format_passages",
]
