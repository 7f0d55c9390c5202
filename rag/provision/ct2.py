"""Convert a transformers causal model folder to CTranslate2, once, into the cache.

The converted folder lives at ``cache_dir()/models/<name>-ct2-<quantization>``
beside its source and holds the CTranslate2 weights (the tokenizer stays in the
source folder) and a stamp naming the source it was made from. A stamp that
no longer matches the source (the folder was rebuilt, another CTranslate2
format) triggers a new conversion. Conversions write into a private temporary
folder and rename it into place, so a crash never leaves half a model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from rag.config import cache_dir
from rag.errors import ModelError

logger = logging.getLogger(__name__)

# Bump when the converted folder layout changes; older folders are rebuilt.
FORMAT_VERSION = 1
STAMP_FILE = "wenyuan-ct2.json"
QUANTIZATIONS = ("int8", "int8_float32", "int8_bfloat16", "bfloat16", "float32")


def ct2_model_dir(source: str | Path, quantization: str, cache: Path | None = None) -> Path:
    """Where the CTranslate2 conversion of ``source`` (a local folder) is cached."""
    return (cache or cache_dir()) / "models" / f"{Path(source).name}-ct2-{quantization}"


def ensure_ct2_model(source: str | Path, quantization: str = "int8", cache: Path | None = None) -> Path:
    """Return a CTranslate2 folder for the transformers folder ``source``, converting on first use.

    Example:
        >>> path = ensure_ct2_model(resolve_generator_model(DEFAULT_GENERATOR_MODEL))  # doctest: +SKIP
        >>> ctranslate2.Generator(str(path), compute_type="int8")  # doctest: +SKIP
    """
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"unknown CTranslate2 quantization {quantization!r}; use one of: {', '.join(QUANTIZATIONS)}")
    source = Path(source).expanduser().resolve()
    if not (source / "config.json").is_file():
        raise ModelError(
            f"{source} is not a local transformers model folder (no config.json); "
            "pass the folder that holds config.json, weights and tokenizer files"
        )
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError as e:
        raise ModelError("the ctranslate2 engine needs the ctranslate2 package: pip install ctranslate2") from e
    stamp = {
        "format_version": FORMAT_VERSION,
        "source": str(source),
        "source_fingerprint": _fingerprint(source),
        "quantization": quantization,
        "ctranslate2": ctranslate2.__version__,
    }
    target = ct2_model_dir(source, quantization, cache)
    if _read_stamp(target) == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    start = time.perf_counter()
    logger.info("converting %s to CTranslate2 %s (once; about 20 s on a small CPU)", source.name, quantization)
    try:
        TransformersConverter(str(source), low_cpu_mem_usage=True).convert(
            str(tmp / "model"), quantization=quantization, force=True
        )
        model = tmp / "model"
        (model / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        model.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        model.rename(target)
    # Broad on purpose: the converter surfaces transformers, torch and its own
    # errors (an unsupported architecture is a plain ValueError); all mean "cannot convert".
    except Exception as e:
        if _read_stamp(target) == stamp:  # another process finished the same conversion first
            return target
        raise ModelError(
            f"cannot convert {source} to CTranslate2 ({type(e).__name__}: {e}); "
            "set generation.engine = \"transformers\" to run the model without it"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved %s in %.1f s", target, time.perf_counter() - start)
    return target


def _read_stamp(target: Path) -> dict | None:
    try:
        stamp = json.loads((target / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if (target / "model.bin").is_file() else None


def _fingerprint(source: Path) -> str:
    """Cheap identity of a model folder: names, sizes and mtimes of its files, config text."""
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        if path.is_file():
            info = path.stat()
            digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    digest.update((source / "config.json").read_bytes())
    return digest.hexdigest()[:16]
