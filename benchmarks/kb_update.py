"""Cost of changing a large knowledge base: adding one small file, and removing it again.

A KB of ``--copies`` copies of the default corpus (each article given its copy number,
so nothing folds as a duplicate) is built once. Then one small file is added and
removed, twice each way in the same run:
- now: the chunks kept from the previous version reuse their saved BM25 tokens
  (``lexical/tokens.jsonl``), so only the new file's chunks are tokenised;
- baseline: the same change after deleting that file, which makes every chunk be
  tokenised again, as every change did before.
A stand-in embedder (seeded random unit vectors) keeps embedding out of the figures;
the real one embeds only the new file's chunks in both cases.

    python benchmarks/kb_update.py --copies 20
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_results  # noqa: E402

from rag import kb  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.corpus import load_documents  # noqa: E402
from rag.lexical import TOKENS_FILE  # noqa: E402


class StandIn:
    """Seeded random unit vectors: embedding costs nothing, so the figures are the KB's own work."""

    dimension = 384
    engine = "stand-in"

    def embed_passages(self, texts):
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            rng = np.random.default_rng(int(hashlib.sha1(text.encode()).hexdigest()[:8], 16))
            v = rng.standard_normal(self.dimension)
            out[i] = v / np.linalg.norm(v)
        return out

    embed_queries = embed_passages


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=20)
    args = ap.parse_args()
    config = Config()
    docs = load_documents(["data/articles.txt"])
    embedder = StandIn()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            import json

            for n in range(args.copies):
                for d in docs:
                    f.write(json.dumps({"id": f"{d.id}-{n}", "text": f"（第{n}份）{d.text}"}, ensure_ascii=False) + "\n")
        note = tmp / "note.txt"
        note.write_text("问源测试公司的吉祥物名叫小蓝鲸，它住在青岛海边，每年夏天都会举办海洋科普活动。", encoding="utf-8")
        root = tmp / "kbs"
        kb.create("big", root, config)
        build_s = timed(kb.add, "big", [corpus], config, lambda: embedder, root)
        chunks = kb.read_manifest(kb.kb_dir("big", root))["counts"]["chunks"]
        tokens = kb.kb_dir("big", root) / "lexical" / TOKENS_FILE
        for way in ("now", "baseline", "now", "baseline"):
            if way == "baseline":
                tokens.unlink()
            add_s = timed(kb.add, "big", [note], config, lambda: embedder, root)
            if way == "baseline":
                tokens.unlink()
            remove_s = timed(kb.remove, "big", [str(note)], root)
            rows.append({"way": way, "chunks": chunks, "add one file s": round(add_s, 2), "remove it s": round(remove_s, 2)})
    print(table(rows))
    print(f"building the {chunks}-chunk KB took {build_s:.1f} s")
    write_results("kb_update", rows, copies=args.copies, build_s=round(build_s, 1))


if __name__ == "__main__":
    main()
