"""The llama.cpp engine of the causal backend (``llama-cpp-python``, the optional [llamacpp] extra).

``LlamaCppGenerator`` runs the "causal" backend when ``generation.engine`` is
"llamacpp", or "auto" for a ``.gguf`` file (nothing else reads one). "auto"
never picks it for a transformers or provisioned model. Given a model
provisioned from a GGUF (the default model is: its Q4_K_M GGUF,
rag/provision/gguf.py), it runs from a Q8_0 copy of that GGUF (``q8_copy``),
which holds the same 4/5-bit weights the transformers folder was dequantised
from; a user's .gguf file runs as given. 2.1x transformers float32 at the same
end-to-end dev accuracy (0.877, 7/7 refusals); transformers bf16 with prompt
lookup is 2.5x at 0.901.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from rag.config import DEFAULT_GENERATOR_MODEL, available_cores
from rag.errors import ModelError
from rag.generation.base import FittedPromptGenerator, is_gguf_path, lstrip_first
from rag.generation.prompt import Messages, PromptSettings

logger = logging.getLogger(__name__)

_LLAMA_CONTEXT = 4096  # the prompt holds at most ~2,000 characters; a longer context only costs memory


class LlamaCppGenerator(FittedPromptGenerator):
    """A GGUF chat model run by llama.cpp, prompted through the chat template stored in the GGUF.

    Args:
        model: A ``.gguf`` file, or a known model provisioned from one (its
            Hugging Face id, registry name or converted folder): then its GGUF
            is kept, verified, in the cache (``rag.provision.gguf.ensure_gguf``).
        max_new_tokens: Most tokens in one reply.
        max_input_tokens: Most prompt tokens; default: the context (4096) less ``max_new_tokens``.
        threads: Compute threads for prompt and decoding; default: the cores this process may use.

    One llama.cpp context holds one conversation, so generations take turns
    (a lock); each starts from an empty cache so the same input gives the same answer.
    """

    backend = "causal"
    engine = "llamacpp"

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR_MODEL,
        *,
        max_new_tokens: int = 96,
        max_input_tokens: int | None = None,
        threads: int | None = None,
        prompt: PromptSettings | None = None,
    ) -> None:
        super().__init__(prompt)
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as e:
            raise ModelError(
                'the llamacpp engine needs llama-cpp-python: pip install -e ".[llamacpp]" (builds llama.cpp, '
                'needs a C compiler and cmake), or set generation.engine = "transformers"'
            ) from e
        path = gguf_file(model)  # after the import: a known model's GGUF may be downloaded
        if not is_gguf_path(model):
            path = q8_copy(path)  # a provisioned model: faster prompt processing, same answers (see q8_copy)
        n_threads = threads or available_cores()
        n_ctx = max_input_tokens + max_new_tokens if max_input_tokens else _LLAMA_CONTEXT
        try:
            self.model = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                n_batch=512, seed=0, verbose=False, flash_attn=True,
            )
        # Broad on purpose: llama-cpp-python reports a bad file as ValueError, others as RuntimeError or OSError.
        except Exception as e:
            raise ModelError(
                f"llama.cpp cannot load {path}: {str(e).rstrip('.')}; check that it is a complete GGUF file "
                "(delete a cached one to assemble it again), or set generation.engine = \"transformers\""
            ) from e
        template = self.model.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{path} carries no chat template; use an instruct model's GGUF")
        special = [self.model.token_eos(), self.model.token_bos()]
        eos, bos = (self.model.detokenize([t], special=True).decode("utf-8", "replace") if t >= 0 else "" for t in special)
        self._format = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._lock = threading.Lock()
        self.max_input_tokens = max_input_tokens or self.model.n_ctx() - max_new_tokens
        logger.info("loaded llama.cpp model %s (%d threads, input limit %d tokens)", path, n_threads, self.max_input_tokens)

    reports_usage = True

    def stream_complete(self, messages: Messages, usage: dict[str, int] | None = None) -> Iterator[str]:
        ids = self._checked_ids(messages)
        if usage is not None:
            usage.update(prompt_tokens=len(ids), completion_tokens=0)
        with self._lock:
            # Forget the previous prompt: a reused prefix is evaluated in other batch
            # shapes, which can change a greedy answer by rounding.
            self.model.reset()
            parts = self.model.create_completion(
                ids, max_tokens=self.max_new_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=True
            )
            try:
                text = ""
                for piece in lstrip_first(part["choices"][0]["text"] for part in parts):
                    text += piece
                    yield piece
            except (RuntimeError, ValueError) as e:
                raise ModelError(f"llama.cpp generation failed: {e}") from e
            finally:
                parts.close()  # a consumer that stops early also stops the decoding
                if usage is not None:  # streamed parts can hold several tokens: count the text
                    usage["completion_tokens"] = len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _encode(self, messages: Messages) -> list[int]:
        # As llama-cpp-python's own chat handler: the template writes any BOS itself.
        prompt = self._format(messages=messages).prompt
        return self.model.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)


def gguf_file(model: str) -> Path:
    """The GGUF file llama.cpp runs for ``model``: a ``.gguf`` path, or a known model's cached GGUF."""
    from rag.provision.gguf import KNOWN_MODELS, ensure_gguf, gguf_model_for

    if is_gguf_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelError(f"no GGUF file at {path}; set generation.model to an existing .gguf file")
        return path
    spec = gguf_model_for(model)
    if spec is None:
        raise ModelError(
            f"llama.cpp runs GGUF files, and {model!r} is neither a .gguf file nor a model provisioned from one "
            f"({', '.join(sorted(KNOWN_MODELS))}); set generation.model to a .gguf file "
            'or set generation.engine = "transformers"'
        )
    return ensure_gguf(spec.name)


def q8_copy(path: Path) -> Path:
    """A Q8_0 copy of the GGUF at ``path``, made once beside it (a few seconds).

    The provisioned Qwen GGUF is Q4_K_M/Q5_0; its 8-bit requantisation holds
    the same 4/5-bit values almost exactly, and llama.cpp processes prompts
    faster from 8-bit blocks on AVX-512 VNNI (ttft 2.7 s against 3.2 s for a
    1,500-character prompt here). A user's own .gguf file is used as given.
    """
    import ctypes

    import llama_cpp

    target = path.with_name(f"{path.stem}.q8_0.gguf")
    marker = target.with_name(target.name + ".json")
    stamp = {"source": str(path.resolve()), "size": path.stat().st_size, "mtime": int(path.stat().st_mtime)}
    if target.is_file() and marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return target
    logger.info("requantising %s to Q8_0 for llama.cpp (once)", path.name)
    tmp = target.with_name(f".{target.name}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = available_cores()
    if llama_cpp.llama_model_quantize(str(path).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not requantise {path}; delete it to assemble it again, "
                         'or set generation.engine = "transformers"')
    tmp.replace(target)
    marker.write_text(json.dumps(stamp), encoding="utf-8")
    return target
