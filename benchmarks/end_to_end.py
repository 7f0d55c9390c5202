"""End to end: index build time, `rag serve` time to ready, answer latency, peak memory.

* build: ``rag index build --force`` of the default corpus into a scratch
  folder, once per embedding backend (the float32 baseline and ours);
* serve: ``rag serve`` on a free port with the built index, timed from the
  process start until the page answers HTTP 200, with the process's peak RSS;
* answers: ``RAG.ask`` (retrieval, generation, citation checks) over the dev
  questions with the default configuration, timed per question after one
  warm-up answer, with this process's peak RSS.

    python benchmarks/end_to_end.py --limit 20
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, load_dev_questions, peak_rss_mb, percentiles, table, write_results  # noqa: E402

logger = logging.getLogger("end_to_end")
RAG_CLI = [sys.executable, "-c", "from rag.cli import main; main()"]


def _config_file(folder: Path, backend: str) -> Path:
    path = folder / f"{backend}.toml"
    path.write_text(f'[embedding]\nbackend = "{backend}"\n', encoding="utf-8")
    return path


def bench_build(backends: list[str], folder: Path) -> list[dict]:
    rows = []
    for backend in backends:
        out = folder / f"index-{backend}"
        cmd = RAG_CLI + ["index", "build", "--force", "--index-dir", str(out), "--config", str(_config_file(folder, backend))]
        with Timer() as t:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, WENYUAN_NO_PROGRESS="1"))
        if proc.returncode != 0:
            rows.append({"stage": f"index build ({backend})", "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        rows.append({"stage": f"index build ({backend})", "wall_s": round(t.s, 1), "embed_s": manifest["timings"]["embed_s"],
                     "chunks": manifest["counts"]["chunks"], "faiss": manifest.get("faiss", {}).get("class", manifest["faiss_type"])})
        print(table([rows[-1]]), flush=True)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def bench_serve(index_dir: str, backend: str, timeout_s: float) -> dict:
    port = _free_port()
    cmd = RAG_CLI + ["serve", "--index-dir", index_dir, "--port", str(port), "--backend", backend]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    ready = None
    try:
        while time.perf_counter() - start < timeout_s and proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    row = {"stage": f"rag serve --backend {backend}", "ready_s": round(ready, 1) if ready else None, "peak_rss_mb": round(peak)}
    if ready is None:
        row["error"] = (out or "").strip().splitlines()[-1:] or "not ready in time"
    print(table([row]), flush=True)
    return row


def bench_answers(index_dir: str, limit: int) -> dict:
    from rag.evaluation import metrics as m
    from rag.pipeline import RAG

    questions = load_dev_questions()
    step = max(1, len(questions) // limit)
    questions = questions[::step][:limit]
    with Timer() as t_load:
        rag = RAG.load(index_dir)
        rag.ask(questions[0]["question"])  # warm-up: loads the generator
    totals, first, correct = [], [], []
    for q in questions:
        with Timer() as t:
            answer = rag.ask(q["question"])
        totals.append(t.s * 1000)
        first.append(answer.timings.get("first_token_ms", answer.timings.get("total_ms", 0.0)))
        if q["answers"]:
            correct.append(m.answer_accuracy(m.short_answer(answer.text), q["answers"]))
    p = percentiles(totals)
    row = {"stage": f"answers ({len(questions)} dev questions)", "load_s": round(t_load.s, 1), "answer_p50_ms": p["p50_ms"],
           "answer_p95_ms": p["p95_ms"], "first_token_p50_ms": percentiles(first)["p50_ms"],
           "accuracy (answerable)": round(sum(correct) / max(1, len(correct)), 4), "peak_rss_mb": round(peak_rss_mb())}
    print(table([row]), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-backends", nargs="*", default=["sentence-transformers", "auto"], help="embedding backends to time a build with")
    ap.add_argument("--index-dir", default="index/default", help="built index for serve and answers")
    ap.add_argument("--serve-backend", default="causal")
    ap.add_argument("--serve-timeout", type=float, default=180)
    ap.add_argument("--limit", type=int, default=20, help="dev questions to answer (88 in all)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["build", "serve", "answers"])
    ap.add_argument("--name", default="end_to_end")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: list[dict] = []
    folder = Path(tempfile.mkdtemp(prefix="wenyuan-e2e-"))
    try:
        if "build" not in args.skip:
            rows += bench_build(args.build_backends, folder)
            write_results(args.name, rows)
        if "serve" not in args.skip:
            rows.append(bench_serve(args.index_dir, args.serve_backend, args.serve_timeout))
            write_results(args.name, rows)
        if "answers" not in args.skip:
            rows.append(bench_answers(args.index_dir, args.limit))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = write_results(args.name, rows, settings=vars(args))
    print("\n" + table(rows) + f"\n\nwrote {path}")


if __name__ == "__main__":
    main()
