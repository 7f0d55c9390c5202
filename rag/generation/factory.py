"""Which backend and engine build the generator: ``build_generator`` and the pure ``choose_engines``.

The "causal" backend runs one chat model on one of three engines, all with the
same prompt and greedy decoding. On the 2-core CPU, against transformers
float32 (benchmarks/results/generation_speed_v5.json, _v4, _v2): transformers
in bf16 with prompt lookup answers 2.5x faster at the same accuracy; llama.cpp
on a Q8_0 copy of the provisioned GGUF 2.1x (end to end on the dev set:
accuracy 0.877 against 0.901, both 7/7 refusals); CTranslate2 int8 about 3x
but 0.852 accuracy.

``engine = "auto"`` (the configured default) picks transformers where the CPU
computes bf16 natively (bf16 with prompt lookup is the fastest there) and
CTranslate2 int8, a core dependency, elsewhere: there transformers runs in
float32, where prompt lookup gains little (1.03x) and an answer took 16 s on
an AVX2-only 2-core machine against 7 s for CTranslate2. If CTranslate2 cannot
load the model, "auto" logs a warning and falls back to transformers. "auto"
never picks llama.cpp for a transformers or provisioned model (it is an
optional extra, not installed in CI); only a ``.gguf`` file, which nothing
else reads, runs on llama.cpp under "auto". ``engine = "llamacpp"`` asks for
it explicitly.

Engine modules are imported only when their engine is built, so importing
this package loads neither torch, ctranslate2 nor llama_cpp.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from rag.config import DEFAULT_GENERATOR_MODEL
from rag.errors import ConfigError, ModelError
from rag.generation.base import Generator, check_prompt_lookup, is_gguf_path

logger = logging.getLogger(__name__)

BACKENDS = ("causal", "seq2seq", "extractive")
ENGINES = ("auto", "ctranslate2", "llamacpp", "transformers")
_ENGINE_NAMES = {"ctranslate2": "CTranslate2", "llamacpp": "llama.cpp", "transformers": "transformers"}


def build_generator(backend: str, model: str | None = None, **kwargs: Any) -> Generator:
    """Build the generator named by ``backend`` ("causal", "seq2seq" or "extractive").

    The causal backend also takes ``engine``: "transformers" (default), "ctranslate2",
    "llamacpp" or "auto" (see :func:`choose_engines`).

    Example:
        >>> build_generator("causal", None, max_new_tokens=64)  # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown generation backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "seq2seq" and not model:
        raise ConfigError("the seq2seq backend needs a model: a local folder or an id such as bigscience/mt0-small")
    try:
        if backend == "extractive":
            from rag.generation.extractive import ExtractiveGenerator

            return ExtractiveGenerator(**kwargs)
        if backend == "seq2seq":
            from rag.generation.hf import Seq2SeqGenerator

            return Seq2SeqGenerator(model, **kwargs)
        return build_causal(model or DEFAULT_GENERATOR_MODEL, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad option for the {backend} generation backend: {e}") from e


def build_causal(model: str, engine: str = "transformers", **kwargs: Any) -> Generator:
    """The causal ``model`` on the first engine of :func:`choose_engines` that loads it."""
    engines = choose_engines(model, engine, installed=_installed, options=kwargs.keys())
    return load_first(engines, lambda name: _load_engine(name, model, kwargs), model)


def choose_engines(
    model: str,
    engine: str,
    *,
    installed: Callable[[str], bool] | Collection[str],
    options: Collection[str] = (),
) -> list[str]:
    """The engines to try, in order, for the causal ``model`` under ``generation.engine = engine``.

    Pure: the caller passes what it found out. ``installed``: the importable modules
    (a predicate or a collection of names); ``options``: the keyword options given to the engine.

    Rules:
        - an unknown ``engine`` is a ConfigError listing :data:`ENGINES`;
        - a ``.gguf`` file runs on llama.cpp only: ["llamacpp"] for "auto" or
          "llamacpp", a ModelError for "ctranslate2" or "transformers";
        - any engine other than "auto" is used as named;
        - "auto" with a ``dtype`` option (a transformers option): ["transformers"];
          with a ``compute_type`` option (a CTranslate2 one): ["ctranslate2"];
        - "auto" otherwise: ["ctranslate2", "transformers"] when ``ctranslate2``
          is installed, else ["transformers"] (bf16 where the CPU has it natively).
          CTranslate2 int8 on every CPU, native bf16 or not: on the tune splits its
          answers were as often right as transformers bf16's (0.918 both, default
          corpus; 0.516 against 0.527, encyclopedia), the answer check is fitted on
          both, and one engine everywhere gives the same answers on every machine.

    "auto" never returns "llamacpp" for anything but a ``.gguf`` file.
    """
    has = installed if callable(installed) else installed.__contains__
    if engine not in ENGINES:
        raise ConfigError(f"unknown generation engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if is_gguf_path(model):
        if engine in ("ctranslate2", "transformers"):
            raise ModelError(f'{model} is a GGUF file, which only llama.cpp runs; set generation.engine = "llamacpp" or "auto"')
        return ["llamacpp"]
    if engine != "auto":
        return [engine]
    if "dtype" in options:
        return ["transformers"]
    if "compute_type" in options:
        return ["ctranslate2"]
    if not has("ctranslate2"):
        return ["transformers"]
    return ["ctranslate2", "transformers"]


def load_first(engines: Sequence[str], load: Callable[[str], Generator], model: str) -> Generator:
    """``load(engine)`` for each of ``engines`` until one loads; a ModelError before the last logs a warning."""
    for name, following in zip(engines, engines[1:]):
        try:
            return load(name)
        except ModelError as e:
            logger.warning("%s cannot run %s, trying %s: %s", _ENGINE_NAMES[name], model, _ENGINE_NAMES[following], e)
    return load(engines[-1])


def _load_engine(engine: str, model: str, kwargs: dict[str, Any]) -> Generator:
    if engine == "ctranslate2":
        from rag.generation.ct2 import CTranslate2Generator

        return CTranslate2Generator(model, **_without_prompt_lookup("CTranslate2", kwargs))
    if engine == "llamacpp":
        from rag.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(model, **_without_prompt_lookup("llama.cpp", kwargs))
    from rag.generation.hf import CausalGenerator

    return CausalGenerator(model, **kwargs)


def _without_prompt_lookup(engine: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    # CTranslate2 has no prompt lookup; llama-cpp-python's (LlamaPromptLookupDecoding)
    # needs logits_all, a context-by-vocabulary float array (2.5 GB at 4096 tokens).
    kwargs = dict(kwargs)
    if check_prompt_lookup(kwargs.pop("prompt_lookup", 0)):
        logger.info("%s runs without prompt lookup decoding: one token a step", engine)
    return kwargs


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
