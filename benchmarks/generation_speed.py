"""Generation speed of the default generator (Qwen2.5-Coder-0.5B-Instruct) on dev questions.

For each variant and question: time to first token, decode tokens/s and total
answer time, over the same retrieved passages (top 5, retrieved once). The
baseline is transformers in float32, one token a step; against it: bfloat16 (what
``dtype="auto"`` picks on CPUs with AVX512-BF16/AMX), prompt lookup decoding
(drafts copied from the prompt, checked in one pass: ``generation.prompt_lookup``,
the default), dynamic int8
(``torch.ao.quantization.quantize_dynamic``), ``torch.compile``, thread
counts, shorter prompts, and llama.cpp (``llama-cpp-python``) on the GGUF the
model is provisioned from (Q4_K_M: the float32/bf16 folder is dequantised from the same weights),
CTranslate2 (the shipped fast engine, rag/generation/ct2.py: int8 weights,
float32 compute; with and without its cached system prompt) and onnxruntime-genai (int4 weights, int8 compute).

Quality guard: answer accuracy (contains-gold, ``rag.evaluation.metrics``) of
the raw generated answer on the answerable questions, within 0.02 of float32.

    python benchmarks/generation_speed.py --limit 20
    python benchmarks/generation_speed.py --variants hf-fp32 llama.cpp --limit 81
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, load_dev_questions, machine, peak_rss_mb, percentiles, table, write_results  # noqa: E402

from rag.config import DEFAULT_GENERATOR_MODEL, DEFAULT_PROMPT_LOOKUP, cache_dir  # noqa: E402
from rag.evaluation import metrics as m  # noqa: E402
from rag.generation import DEFAULT_MAX_PROMPT_CHARS, CausalGenerator, build_messages  # noqa: E402

logger = logging.getLogger("generation_speed")
GUARD = 0.02
MAX_NEW_TOKENS = 96


class Variant:
    """A way to run the generator: ``stream(messages)`` yields text pieces."""

    def __init__(self, name: str, make: Callable[[], Callable[[list[dict]], Iterator[str]]], max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
                 top_k: int = 5, threads: int | None = None, focus: int = 0, focus_from: int = 1) -> None:
        self.name, self.make, self.max_prompt_chars, self.top_k, self.threads = name, make, max_prompt_chars, top_k, threads
        self.focus = focus  # generation.prompt_focus: characters of each passage shown (0: all)
        self.focus_from = focus_from  # generation.prompt_focus_from: the first passage focus cuts

    def messages(self, question: str, passages: list) -> list[dict]:
        return build_messages(question, passages[: self.top_k], self.max_prompt_chars, self.focus, focus_from=self.focus_from)


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def hf(dtype: str = "float32", int8: bool = False, compile_: bool = False, threads: int | None = None, prompt_lookup: int = 0):
    def make():
        import torch

        _threads(threads)
        gen = CausalGenerator(DEFAULT_GENERATOR_MODEL, dtype=dtype, max_new_tokens=MAX_NEW_TOKENS, threads=threads,
                              prompt_lookup=prompt_lookup)
        if int8:
            gen.model = torch.ao.quantization.quantize_dynamic(gen.model, {torch.nn.Linear}, dtype=torch.qint8)
        if compile_:
            gen.model.forward = torch.compile(gen.model.forward, dynamic=True)
        return gen.stream_complete

    return make


def gguf_path() -> Path:
    from rag.provision.gguf import assemble_gguf, known_model

    return assemble_gguf(known_model("qwen2.5-coder-0.5b-instruct"), cache_dir() / "bench" / "qwen2.5-coder-0.5b-instruct.gguf")


def llama_cpp(threads: int, prompt_threads: int | None = None):
    def make():
        from llama_cpp import Llama

        llm = Llama(model_path=str(gguf_path()), n_ctx=4096, n_threads=threads, n_threads_batch=prompt_threads or threads,
                    n_batch=512, verbose=False, seed=0)

        def stream(messages):
            # Forget the previous prompt: llama.cpp would otherwise reuse its shared prefix
            # (system prompt, first passages), which no other variant gets.
            llm.reset()
            for part in llm.create_chat_completion(messages, max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1, stream=True):
                piece = part["choices"][0]["delta"].get("content")
                if piece:
                    yield piece

        return stream

    return make


GENERATOR_1_5B = "Qwen/Qwen2.5-Coder-1.5B-Instruct"  # `rag models provision --model` it first


@functools.cache
def _ct2_generator(compute_type: str, threads: int | None, model: str):
    from rag.generation.ct2 import CTranslate2Generator

    return CTranslate2Generator(model, compute_type=compute_type, max_new_tokens=MAX_NEW_TOKENS, threads=threads)


def ct2(compute_type: str = "int8", threads: int | None = None, model: str = DEFAULT_GENERATOR_MODEL,
        cache_system_prompt: bool = False):
    """The shipped CTranslate2 engine (rag/generation/ct2.py): conversion cached, then streamed.

    Variants with the same model share one loaded copy. ``cache_system_prompt``: reuse the
    model state after the system turn (the engine's default since it was measured here);
    off, the whole prompt is run for every question, as before.
    """
    def make():
        gen = _ct2_generator(compute_type, threads, model)

        def stream(messages):
            gen.cache_system_prompt = cache_system_prompt
            yield from gen.stream_complete(messages)

        return stream

    return make


def ort_genai_path(precision: str) -> Path:
    """The model folder built by onnxruntime-genai's model builder (once, cached)."""
    import subprocess

    from rag.provision.gguf import resolve_generator_model

    out = cache_dir() / "bench" / f"qwen2.5-coder-0.5b-instruct-ort-{precision}"
    if not (out / "genai_config.json").is_file():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", resolve_generator_model(DEFAULT_GENERATOR_MODEL),
                        "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(out / ".cache")], check=True)
    return out


def ort_genai(precision: str = "int4"):
    """onnxruntime-genai on its own ONNX export; int4 weights, int8 compute (the builder's CPU default)."""
    def make():
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        from rag.provision.gguf import resolve_generator_model

        model = og.Model(str(ort_genai_path(precision)))
        tokenizer = AutoTokenizer.from_pretrained(resolve_generator_model(DEFAULT_GENERATOR_MODEL))
        og_tokenizer = og.Tokenizer(model)

        def stream(messages):
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(ids) + MAX_NEW_TOKENS, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(ids)
            decoder = og_tokenizer.create_stream()
            while not generator.is_done():
                generator.generate_next_token()
                piece = decoder.decode(generator.get_next_tokens()[0])
                if piece:
                    yield piece

        return stream

    return make


def llama_engine():
    """The shipped llama.cpp engine (rag/generation/llamacpp.py)."""
    def make():
        from rag.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(DEFAULT_GENERATOR_MODEL, max_new_tokens=MAX_NEW_TOKENS).stream_complete

    return make


def variants(cores: int) -> list[Variant]:
    return [
        Variant("hf-fp32 (baseline)", hf("float32", threads=cores)),
        Variant("hf-bf16", bf16 := hf("bfloat16", threads=cores)),
        Variant(f"hf-bf16 prompt lookup {DEFAULT_PROMPT_LOOKUP} (default)", hf("bfloat16", threads=cores, prompt_lookup=DEFAULT_PROMPT_LOOKUP)),
        Variant("hf-bf16 prompt lookup, top 3 passages", bf16_pl := hf("bfloat16", threads=cores, prompt_lookup=DEFAULT_PROMPT_LOOKUP), top_k=3),
        Variant("hf-bf16 prompt lookup, top 3 passages, focus 150", bf16_pl, top_k=3, focus=150),
        Variant(f"hf-fp32 prompt lookup {DEFAULT_PROMPT_LOOKUP}", hf("float32", threads=cores, prompt_lookup=DEFAULT_PROMPT_LOOKUP)),
        Variant("hf-int8-dynamic", hf("float32", int8=True, threads=cores)),
        Variant("ctranslate2 int8", ct2_int8 := ct2("int8")),
        Variant("ctranslate2 int8 prompt 1000 chars", ct2_int8, max_prompt_chars=1000),
        Variant("ctranslate2 int8 top 3 passages", ct2_int8, top_k=3),
        Variant("ctranslate2 int8 top 3 passages, cached system prompt, whole passages (default until 2026-12-03)", ct2("int8", cache_system_prompt=True), top_k=3),
        Variant("ctranslate2 int8 top 2 passages, cached system prompt", ct2("int8", cache_system_prompt=True), top_k=2),
        Variant("ctranslate2 int8 top 3 passages, cached system prompt, passages 2-3 focused to 200 (default)",
                ct2_cached := ct2("int8", cache_system_prompt=True), top_k=3, focus=200, focus_from=2),
        Variant("ctranslate2 int8 top 3 passages, cached system prompt, passages 2-3 focused to 150",
                ct2_cached, top_k=3, focus=150, focus_from=2),
        Variant("ctranslate2 int8 top 3 passages, focus 150", ct2_int8, top_k=3, focus=150),
        Variant("ctranslate2 int8 top 5 passages, focus 120", ct2_int8, top_k=5, focus=120),
        Variant("ctranslate2 int8 1.5B top 3 passages", ct2_15 := ct2("int8", model=GENERATOR_1_5B), top_k=3),
        Variant("ctranslate2 int8 1.5B top 3 passages, focus 150", ct2_15, top_k=3, focus=150),
        Variant("ctranslate2 int8 1.5B, the default prompt (cached system prompt, passages 2-3 focused to 200)",
                ct2("int8", model=GENERATOR_1_5B, cache_system_prompt=True), top_k=3, focus=200, focus_from=2),
        # CTranslate2 4.8 refused int8_bfloat16 and bfloat16 on an AVX512-BF16 CPU without AMX ("not efficient"): an error row there.
        Variant("ctranslate2 int8_bfloat16", ct2("int8_bfloat16")),
        Variant("onnxruntime-genai int4 (acc. level 4)", ort_genai("int4")),
        Variant("hf-bf16 1 thread", bf16, threads=1),
        Variant("hf-bf16 prompt 800 chars", bf16, max_prompt_chars=800),
        Variant("hf-bf16 top 3 passages", bf16, top_k=3),
        Variant("hf-bf16 torch.compile", hf("bfloat16", compile_=True, threads=cores)),
        Variant(f"llama.cpp GGUF Q4_K_M {cores} threads", llama := llama_cpp(cores)),
        Variant("llama.cpp GGUF Q4_K_M prompt 800 chars", llama, max_prompt_chars=800),
        Variant("llama.cpp GGUF Q4_K_M top 3 passages", llama, top_k=3),
        Variant('engine="llamacpp" (Q8_0 copy, flash attention)', llama_engine()),
        # llama-cpp-python's LlamaPromptLookupDecoding failed here without logits_all=True ("could not
        # broadcast ... into shape (0,)"), which keeps a context x vocabulary float array (2.5 GB): not tried further.
        # llama.cpp's threads spin while they wait for each other: one thread can win on a busy machine.
        Variant("llama.cpp GGUF Q4_K_M 1 thread", llama1 := llama_cpp(1)),
        Variant("llama.cpp GGUF Q4_K_M 1 thread prompt 800 chars", llama1, max_prompt_chars=800),
        Variant(f"llama.cpp GGUF Q4_K_M 1 thread decode, {cores} prompt", llama_mixed := llama_cpp(1, cores)),
        Variant(f"llama.cpp GGUF Q4_K_M 1 thread decode, {cores} prompt, 800 chars", llama_mixed, max_prompt_chars=800),
    ]


def run_one(stream: Callable, messages: list[dict], tokenizer) -> dict[str, Any]:
    start = time.perf_counter()
    first = None
    pieces = []
    for piece in stream(messages):
        if first is None:
            first = time.perf_counter()
        pieces.append(piece)
    end = time.perf_counter()
    text = "".join(pieces).strip()
    tokens = len(tokenizer(text)["input_ids"]) if text else 0
    first = first or end
    decode_s = end - first
    return {"ttft_ms": (first - start) * 1000, "total_ms": (end - start) * 1000, "tokens": tokens,
            "tok_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else float("nan"), "text": text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20, help="answerable dev questions to answer (81 in all)")
    ap.add_argument("--variants", nargs="*", default=None, help="variant names to run (default: all)")
    ap.add_argument("--index-dir", default="index/default")
    ap.add_argument("--name", default="generation_speed")
    ap.add_argument("--isa", default=None, help="CT2_FORCE_CPU_ISA for the CTranslate2 variants, e.g. AVX512 (default: "
                    "CTranslate2's own choice: AVX2 on the AVX-512 CPU measured); fixed per process, so compare ISAs run by run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.isa:
        os.environ["CT2_FORCE_CPU_ISA"] = args.isa
    from transformers import AutoTokenizer

    from rag.pipeline import RAG
    from rag.provision.gguf import resolve_generator_model

    cores = machine()["cores"]
    questions = load_dev_questions(answerable_only=True)
    step = max(1, len(questions) // args.limit)
    questions = questions[::step][: args.limit]  # spread over the set, not just its first topics
    rag = RAG.load(args.index_dir)
    passages = rag.retrieve_batch([q["question"] for q in questions], top_k=5)
    tokenizer = AutoTokenizer.from_pretrained(resolve_generator_model(DEFAULT_GENERATOR_MODEL))
    chosen = [v for v in variants(cores) if not args.variants or v.name in args.variants]
    rows: dict[str, dict] = {}
    streams: dict[str, Callable] = {}
    loaded: dict[int, Callable] = {}  # variants differing only in prompt share one model
    for variant in chosen:
        try:
            with Timer() as t_load:
                key = id(variant.make)
                if key not in loaded:
                    loaded[key] = variant.make()
                streams[variant.name] = loaded[key]
            warm = variant.messages(questions[0]["question"], passages[0])
            with Timer() as t_warm:
                run_one(streams[variant.name], warm, tokenizer)  # first call: lazy init, compilation
            rows[variant.name] = {"variant": variant.name, "load_s": round(t_load.s, 1), "warm_s": round(t_warm.s, 1)}
        except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
            logger.exception("variant %s failed", variant.name)
            rows[variant.name] = {"variant": variant.name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            streams.pop(variant.name, None)
    runs: dict[str, list[dict]] = {name: [] for name in streams}
    # Question by question, every variant in turn: load changes on a shared machine hit all alike.
    for i, (q, ps) in enumerate(zip(questions, passages)):
        for variant in chosen:
            if variant.name not in streams:
                continue
            _threads(variant.threads or cores)
            r = run_one(streams[variant.name], variant.messages(q["question"], ps), tokenizer)
            r["correct"] = m.answer_accuracy(m.short_answer(r["text"]), q["answers"])
            runs[variant.name].append(r)
        print(f"question {i + 1}/{len(questions)}: " + ", ".join(f"{n}: {runs[n][-1]['total_ms'] / 1000:.1f}s" for n in runs), flush=True)
    base = next(iter(runs), None)
    for name, rs in runs.items():
        total = [r["total_ms"] for r in rs]
        ratio = np.array([b["total_ms"] for b in runs[base]]) / np.array(total)
        ttft_ratio = np.array([b["ttft_ms"] for b in runs[base]]) / np.array([r["ttft_ms"] for r in rs])
        rows[name].update({
            "ttft_p50_ms": round(float(np.median([r["ttft_ms"] for r in rs]))),
            "ttft_p95_ms": round(float(np.percentile([r["ttft_ms"] for r in rs], 95))),
            "tok/s": round(float(np.nanmedian([r["tok_s"] for r in rs])), 1),
            "answer_p50_ms": percentiles(total)["p50_ms"], "answer_p95_ms": percentiles(total)["p95_ms"],
            "mean_tokens": round(float(np.mean([r["tokens"] for r in rs])), 1),
            "speed-up (median per question)": round(float(np.median(ratio)), 2),
            "ttft speed-up (median per question)": round(float(np.median(ttft_ratio)), 2),
            "accuracy": round(float(np.mean([r["correct"] for r in rs])), 4),
            "same text as baseline": round(float(np.mean([r["text"] == b["text"] for r, b in zip(rs, runs[base])])), 4)})
        rows[name]["guard"] = "pass" if rows[name]["accuracy"] >= rows[base]["accuracy"] - GUARD else "FAIL"
    answers = {name: [r["text"] for r in rs] for name, rs in runs.items()}
    path = write_results(args.name, list(rows.values()), questions=len(questions), answers=answers,
                         ct2_isa=os.environ.get("CT2_FORCE_CPU_ISA", "CTranslate2's choice"),
                         guard=f"accuracy at most {GUARD} below float32", peak_rss_mb=round(peak_rss_mb()))
    print("\n" + table(list(rows.values())) + f"\n\n{len(questions)} answerable dev questions; wrote {path}")


if __name__ == "__main__":
    main()
