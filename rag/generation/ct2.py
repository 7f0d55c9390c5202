"""The CTranslate2 engine of the causal backend: same prompt, greedy decoding, int8 weights.

``CTranslate2Generator`` runs the "causal" backend when ``generation.engine``
is "ctranslate2", or "auto" on a CPU without native bf16 (or given a
``compute_type``). The transformers folder is converted once into the cache
(rag/provision/ct2.py). Measured on the 81 answerable dev questions, in one
run against transformers float32 (benchmarks/results/generation_speed_v2.json):
raw answers 2.9x faster with 5 passages in the prompt (accuracy 0.753 vs
0.790) and 3.6x with 3 (0.790). End to end (rag eval, dev set) int8 answers
0.852 vs 0.901 for transformers bfloat16, so it is not the engine where the CPU
computes bf16 natively.

The system turn opens every prompt and is the same for every question, so it is
passed as CTranslate2's ``static_prompt``: the model state after it is computed
once and reused, and only the question's own tokens are run before the first
answer token: about 1.1x faster first tokens with 3 passages (80 of ~620 prompt
tokens cached), token-identical answers (benchmarks/results/generation_speed_prefix*.json,
tests/test_generation_ct2_prefix.py).

On a CPU with AVX-512, CTranslate2 runs its own kernels (everything but MKL's
matrix products) with AVX2 unless ``CT2_FORCE_CPU_ISA=AVX512`` is set. That is
faster (first token p50 0.96 -> 0.86 s on the 81 answerable dev questions) but
not the same arithmetic (23 of 30 dev answers identical), and on the tune splits
it answered a little worse (mean utility 0.631 -> 0.616), so it is left to the
user (README, "First token").
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.config import DEFAULT_GENERATOR_MODEL, available_cores
from rag.errors import ModelError
from rag.generation.base import FittedPromptGenerator, lstrip_first
from rag.generation.prompt import Messages, PromptSettings

logger = logging.getLogger(__name__)

_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")
# CTranslate2 keeps every cached static prompt for the model's lifetime: cache only a few
# (one per prompt style), and run any further system turn as part of the prompt.
_MAX_CACHED_PREFIXES = 4


class CTranslate2Generator(FittedPromptGenerator):
    """A decoder-only chat model run by CTranslate2, prompted through its chat template.

    Args:
        model: Hugging Face id or local transformers folder (as for ``CausalGenerator``).
        compute_type: CTranslate2 quantization of the cached weights and compute
            type, e.g. "int8" (int8 weights, float32 activations) or "int8_bfloat16".
        max_new_tokens: Most tokens in one reply.
        threads: Compute threads; default: the cores this process may use.
        cache_system_prompt: Reuse the model state after the system turn across
            prompts (CTranslate2's cached ``static_prompt``) instead of recomputing it.
    """

    backend = "causal"  # same backend to users: same model, prompt and greedy decoding
    engine = "ctranslate2"

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR_MODEL,
        *,
        compute_type: str = "int8",
        max_new_tokens: int = 96,
        max_input_tokens: int | None = None,
        threads: int | None = None,
        prompt: PromptSettings | None = None,
        cache_system_prompt: bool = True,
    ) -> None:
        super().__init__(prompt)
        from rag.provision.ct2 import ensure_ct2_model
        from rag.provision.gguf import resolve_generator_model

        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.cache_system_prompt = cache_system_prompt
        self._prefixes: dict[str, list[int]] = {}  # system turn -> its ids, which start every prompt
        self._prefix_lock = threading.Lock()  # answers from several threads: the size bound holds
        source = _local_folder(resolve_generator_model(model))
        # One int8 conversion serves every int8_* compute type; CTranslate2 adapts it on load.
        path = ensure_ct2_model(source, "int8" if compute_type.startswith("int8") else compute_type)
        try:
            import ctranslate2
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = ctranslate2.Generator(
                str(path), device="cpu", compute_type=compute_type, intra_threads=threads or available_cores(), inter_threads=1
            )
        # Broad on purpose: damaged files fail in tokenizers, json or CTranslate2 itself.
        except Exception as e:
            fix = (
                'use compute_type "int8", which every CPU runs' if "compute type" in str(e)
                else "delete that folder to convert it again"
            )
            raise ModelError(
                f"cannot load CTranslate2 model {path}: {str(e).rstrip('.')}; {fix}, "
                "or set generation.engine = \"transformers\""
            ) from e
        if self.tokenizer.chat_template is None:
            raise ModelError(f"{model!r} has no chat template; use the seq2seq backend or an instruct model")
        self._stops = [t for t in _STOP_TOKENS if t in self.tokenizer.get_vocab()]
        self._stop_ids = {self.tokenizer.convert_tokens_to_ids(t) for t in self._stops}
        context = _context_tokens(Path(source))
        self.max_input_tokens = max_input_tokens or context - max_new_tokens
        logger.info("loaded CTranslate2 %s model %s (input limit %d tokens)", compute_type, path, self.max_input_tokens)

    token_log_probs = True
    reports_usage = True

    def stream_complete(self, messages: Messages, log_probs: list[float] | None = None,
                        usage: dict[str, int] | None = None) -> Iterator[str]:
        ids = self._checked_ids(messages)  # the limit counts the system turn too
        if usage is not None:
            usage.update(prompt_tokens=len(ids), completion_tokens=0)
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        static = self._static_length(messages, ids) if self.cache_system_prompt else 0
        # Safe from several threads: CTranslate2 guards its static-prompt cache with a mutex and
        # gives each call a copy of the cached state; calls queue for the one replica anyway.
        steps = self.model.generate_tokens(
            tokens[static:], max_length=self.max_new_tokens, sampling_topk=1, end_token=self._stops,
            return_log_prob=log_probs is not None, static_prompt=tokens[:static] or None, cache_static_prompt=True,
        )
        try:
            yield from lstrip_first(self._pieces(steps, log_probs, usage))
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"CTranslate2 generation failed: {e}") from e
        finally:
            steps.close()  # a consumer that stops early also stops the decoding

    def _static_length(self, messages: Messages, ids: list[int]) -> int:
        """How many of ``ids`` are the system turn, whose model state CTranslate2 caches (0: none).

        The split is made in the ids of the whole prompt, so static prompt and rest are
        exactly ``ids`` together. It is made only where the system turn rendered alone
        (for Qwen ``<|im_start|>system\\n…<|im_end|>\\n``) is a prefix of them.
        """
        if not messages or messages[0].get("role") != "system":
            return 0
        system = messages[0]["content"]
        with self._prefix_lock:
            prefix = self._prefixes.get(system)
            if prefix is None:
                if len(self._prefixes) >= _MAX_CACHED_PREFIXES:
                    return 0
                prefix = self._prefixes[system] = self._encode(messages[:1], add_generation_prompt=False)
        # The rest keeps at least one token: decoding starts from it.
        return len(prefix) if len(prefix) < len(ids) and ids[: len(prefix)] == prefix else 0

    def _pieces(self, steps: Iterator[Any], log_probs: list[float] | None = None,
                usage: dict[str, int] | None = None) -> Iterator[str]:
        new: list[int] = []
        shown = ""
        for step in steps:
            if step.token_id in self._stop_ids:
                break
            new.append(step.token_id)
            if usage is not None:
                usage["completion_tokens"] = len(new)
            if log_probs is not None and step.log_prob is not None:
                log_probs.append(step.log_prob)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            # A Chinese character can span two byte-level tokens: wait for the second.
            if text.endswith("\ufffd"):
                continue
            yield text[len(shown) :]
            shown = text

    def _encode(self, messages: Messages, add_generation_prompt: bool = True) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _local_folder(model: str) -> str:
    """A folder for ``model``: itself, or its snapshot in the Hugging Face cache."""
    if os.path.isdir(model):
        return model
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception as e:  # not cached, or no huggingface_hub: both mean "no local copy"
        raise ModelError(f"no local copy of {model!r}; pass a local transformers folder") from e


def _context_tokens(path: Path) -> int:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return int(config.get("max_position_embeddings") or 2048)
