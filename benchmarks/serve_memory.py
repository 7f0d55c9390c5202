"""Start-up time and memory of `rag serve` with a large index, against the default index in the same run.

Starts `rag serve` (the real embedder and generator) on each index in turn and reports:
seconds until the app answers, RSS after start-up, and RSS after ``--searches``
/v1/search calls and ``--answers`` /v1/ask calls on dev questions. The difference
between the two indexes' RSS is what the index and its chunk store cost beyond the models.

A synthetic index written by ``retrieval_scale.py --hybrid-sizes N --keep`` has stand-in
vectors of e5-small's dimension; ``--as-default-model`` writes the default index's
embedding block into its manifest so that `rag serve` embeds queries with the real
model. Its answers mean nothing; its start-up and memory are real.

    python benchmarks/retrieval_scale.py --hybrid-sizes 1000000 --keep --work-dir /tmp/bh
    python benchmarks/serve_memory.py /tmp/bh/hybrid-1000000 --as-default-model
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_dev_questions, table, write_results  # noqa: E402
from load_test import Server, free_port  # noqa: E402


def post(url: str, body: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def measure(index_dir: str, searches: int, answers: int) -> dict:
    questions = [q["question"] for q in load_dev_questions()]
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        server = Server(Path(index_dir), "causal", free_port(), Path(data_dir))
        startup = time.perf_counter() - start
        try:
            rss_start = server.rss_mb()
            times = []
            for q in questions[:searches]:
                t = time.perf_counter()
                post(server.url + "v1/search", {"question": q, "top_k": 5})
                times.append((time.perf_counter() - t) * 1000)
            rss_search = server.rss_mb()
            for q in questions[:answers]:
                post(server.url + "v1/ask", {"question": q})
            rss_answer = server.rss_mb()
        finally:
            server.stop()
    times.sort()
    return {"index": index_dir, "startup_s": round(startup, 1), "rss_started_mb": round(rss_start),
            f"rss_after_{searches}_searches_mb": round(rss_search), f"rss_after_{answers}_answers_mb": round(rss_answer),
            "search_p50_ms (HTTP, with query embedding)": round(times[len(times) // 2], 1) if times else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index_dir", help="the large index folder")
    ap.add_argument("--baseline", default="index/default", help="index measured the same way first (default: index/default)")
    ap.add_argument("--as-default-model", action="store_true", help="give a synthetic index the baseline's embedding block")
    ap.add_argument("--searches", type=int, default=80)
    ap.add_argument("--answers", type=int, default=3)
    ap.add_argument("--name", default="serve_memory")
    args = ap.parse_args()
    if args.as_default_model:
        path = Path(args.index_dir) / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["embedding"] = json.loads((Path(args.baseline) / "manifest.json").read_text(encoding="utf-8"))["embedding"]
        path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    rows = [measure(args.baseline, args.searches, args.answers), measure(args.index_dir, args.searches, args.answers)]
    for key in [k for k in rows[0] if k.startswith("rss_")]:
        rows[1][key.replace("_mb", "_beyond_baseline_mb")] = rows[1][key] - rows[0][key]
    path = write_results(args.name, rows)
    print(table(rows) + f"\n\nwrote {path}")


if __name__ == "__main__":
    main()
