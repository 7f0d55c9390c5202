"""One configuration tree with defaults in code, loadable from TOML.

Unknown keys are errors that name the key, so a typo never silently falls back
to a default.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "intfloat/multilingual-e5-small"
DEFAULT_GENERATOR_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
#: Draft tokens proposed per decoding step by prompt lookup (0: off). Answers quote
#: their passages, so a continuation found in the prompt is often accepted whole.
DEFAULT_PROMPT_LOOKUP = 6


def available_cores() -> int:
    """CPU cores this process may use (a container or taskset may grant fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cache_dir() -> Path:
    """Where provisioned models live: ``$WENYUAN_CACHE`` or ``~/.cache/wenyuan``."""
    env = os.environ.get("WENYUAN_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wenyuan"


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_corpus() -> Path:
    return project_root() / "data" / "articles.txt"


def index_root(root: str | Path | None = None) -> Path:
    """Folder holding the knowledge bases: ``root``, else ``$WENYUAN_INDEX_ROOT``, else ``index/``."""
    chosen = root or os.environ.get("WENYUAN_INDEX_ROOT")
    return Path(chosen).expanduser() if chosen else project_root() / "index"


def default_index_dir() -> Path:
    """The default corpus's index: the knowledge base ``default`` under `index_root`."""
    return index_root() / "default"


@dataclass
class CorpusConfig:
    csv_text_column: str = "text"
    max_file_bytes: int = 50_000_000


@dataclass
class ChunkConfig:
    # Chosen on the tune splits of both dev corpora (benchmarks/retrieval_tuning.py):
    # 300 beat 200 there and on check; see README "Measurements".
    max_chars: int = 300
    overlap_sentences: int = 1
    context_chars: int = 80


@dataclass
class EmbeddingConfig:
    model: str = DEFAULT_EMBEDDING_MODEL
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    batch_size: int = 32
    device: str = "cpu"
    # "auto": on the CPU "openvino-int8" where OpenVINO is installed (3.5x the float32
    # throughput here, same dev hit@5), else "onnx-int8" where ONNX Runtime is, else
    # "sentence-transformers"; or force one of those. See rag/embedding.py,
    # benchmarks/embedding_speed.py. (An engine runs a model, as generation.engine does;
    # the old name embedding.backend is still read.)
    engine: str = "auto"
    threads: int = 0  # 0: the engine's default (all cores this process may use)


@dataclass
class IndexConfig:
    # "auto": exact "flat" search up to 50k chunks, "ivf" (IVF-SQ6, candidates re-scored exactly) above; or
    # force "flat", "ivf", "ivfpq" or "hnsw" (see rag/dense.py, benchmarks/retrieval_scale.py).
    faiss_type: str = "auto"


@dataclass
class RetrievalConfig:
    top_k: int = 5
    candidates: int = 30
    # An approximate dense index (IVF, HNSW) returns this many times `candidates`, re-scored by
    # exact cosine to keep the best `candidates` (benchmarks/retrieval_scale.py --hybrid-sizes).
    dense_overfetch: int = 2
    # "hybrid": weighted dense + BM25 + question bigram coverage (see retrieval.py).
    fusion: str = "hybrid"
    rrf_k: int = 60
    dense_weight: float = 0.5
    lexical_weight: float = 0.25
    coverage_weight: float = 1.0


@dataclass
class GenerationConfig:
    # What kind of generator answers: "causal" (a chat model), "seq2seq" (T5/mT5/BART) or
    # "extractive" (no model: quotes a passage sentence). How a model is run is its `engine`.
    backend: str = "causal"
    model: str = DEFAULT_GENERATOR_MODEL
    # Encoder-decoder checkpoint (T5/mT5/mT0/BART) for the "seq2seq" backend; none ships offline.
    seq2seq_model: str = ""
    # The engine that runs the "causal" backend's model: "transformers" (bf16 where the
    # CPU has it, with prompt lookup: 2.5x the float32 speed, 0.901 dev answer accuracy,
    # 7/7 refusals), "ctranslate2" (int8, a core dependency: ~3x, 0.852 accuracy),
    # "llamacpp" (opt-in: the [llamacpp] extra, not installed or tested by CI; a Q8_0
    # copy of the model's GGUF: 2.1x, 0.877 accuracy), or "auto", the default:
    # CTranslate2 int8 on every CPU (as right as bf16 on the tune splits, the same answers
    # on every machine), transformers where CTranslate2 is missing; llama.cpp only
    # for a .gguf file, which nothing else reads. See rag/generation/factory.py,
    # benchmarks/generation_speed.py.
    engine: str = "auto"
    # Top-ranked passages put in the prompt (0: all retrieved). 3 passages of 300 characters
    # keep the prompt as long as 5 of 200 did before the chunk size changed.
    prompt_passages: int = 3
    # Characters of each prompt passage shown to the model, from passage `prompt_focus_from` on:
    # the sentences sharing most of the question's words, with their neighbours (0: whole
    # passages). A shorter prompt is a faster first token; the answer check still reads whole
    # passages. The top passage, which holds the answer most often, stays whole (from = 2).
    # Chosen on the tune splits against whole passages: mean utility 0.611 -> 0.631; first
    # token p50 1.27 -> 0.96 s on the answerable dev questions (README, "First token").
    prompt_focus: int = 200
    prompt_focus_from: int = 2
    # The answer instruction (rag/generation/prompt.py SYSTEM_PROMPTS): "short" (answer briefly)
    # or "quote" (answer in the passage's own words).
    prompt_style: str = "short"
    # Prompt lookup decoding: draft tokens per step copied from the passages, which
    # the model checks in one pass (0: off). Still greedy; about 1.5x faster answers
    # with transformers. The llamacpp and ctranslate2 engines decode without it.
    prompt_lookup: int = DEFAULT_PROMPT_LOOKUP
    max_new_tokens: int = 96
    max_question_chars: int = 500
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnswerConfig:
    """The answer check (``rag/verify``): when to answer and when to refuse."""

    # P(right) an answer needs, 0..1; None: the threshold fitted with the model on the tune
    # splits (rag/verify/model.json). Higher answers less and more accurately (the
    # risk-coverage curve of `rag eval`).
    strictness: float | None = None
    # Refuse without generating when no passage holds this share of the question's bigrams:
    # the largest value losing at most 1% of right answers on the tune splits (0.25,
    # benchmarks/results/answer_check_fit.json).
    min_evidence: float = 0.25
    # Share of an answer sentence's own bigrams its quoted passage sentence must hold.
    min_support: float = 0.5
    # Give an explicit refusal of the generator a second, extractive try.
    rescue_explicit_refusals: bool = True
    # Answer with the extractive reader's sentence, without generating, where it clears the
    # threshold on its own: the check would pick it whatever the generator said (rag/verify).
    # False generates every answer (the tune runs the check is fitted on need every reply).
    quote_first: bool = True
    # Answerability model file. "": the bundled one fitted for generation.model's answers
    # (rag/verify/model-qwen2.5-coder-1.5b.json for the 1.5B; rag/verify/model.json, the
    # default generator's, for any other).
    model: str = ""


@dataclass
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    chunking: ChunkConfig = field(default_factory=ChunkConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _build(cls, data, "")

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
        return cls.from_dict(data)

    def with_build_settings(self, built: dict[str, Any]) -> "Config":
        """This config with an index's stored settings for how it was read, chunked and
        embedded (``built``: the manifest's ``config``); how it is searched and answered
        stays this config's, so an old index pins no old generator or answer check."""
        stored = Config.from_dict(built)
        return dataclasses.replace(self, corpus=stored.corpus, chunking=stored.chunking,
                                   embedding=stored.embedding, index=stored.index)

    def with_overrides(self, **sections: dict[str, Any]) -> "Config":
        """Return a copy with ``section={key: value}`` overrides applied (None values ignored)."""
        data = self.to_dict()
        for section, values in sections.items():
            if section not in data:
                raise ConfigError(f"unknown config section {section!r}")
            for key, value in values.items():
                if value is not None:
                    data[section][key] = value
        return Config.from_dict(data)


def load_config(path: str | Path | None) -> Config:
    """The config in the TOML file at ``path``, or the defaults when ``path`` is None or empty."""
    return Config.from_toml(path) if path else Config()


# Keys renamed since a release; config files and index manifests that use the old name still load.
RENAMED_KEYS = {"embedding.backend": "embedding.engine"}


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<root>'} must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in RENAMED_KEYS:
            new = RENAMED_KEYS[name]
            logger.info("config key %s is now called %s", name, new)
            key, name = new.rpartition(".")[2], new
            if key in data:
                continue  # both given: the new name wins
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {name!r}; known keys here: {known}")
        sub = fields[key].default_factory if fields[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[key] = _build(sub, value, f"{name}.")
        else:
            kwargs[key] = value
    return cls(**kwargs)
