"""Load test of the HTTP API: concurrent clients mixing searches and answers.

Starts the API in this process (uvicorn in a thread; extractive answers over
``index/default`` when it exists, else a tiny index built from
``tests/data/mini.txt``), or targets ``--url``. ``--clients`` asyncio clients
each loop for ``--seconds``: a search, or (share ``--ask-share``) an answer
via ``/v1/chat/completions``, on dev-set questions.

Reports: requests by kind and status; failed requests other than well-formed
429s (status 429 with ``Retry-After`` and a JSON message); search p50/p95 while
at least one answer was in flight versus when none was; the server's RSS
before and after (in-process runs only); and the machine's load average before
and after. The clients share the server's process and interpreter here, so
latencies include their overhead.

Examples:
    python benchmarks/api_load.py                          # 32 clients, 120 s
    python benchmarks/api_load.py --clients 32 --seconds 20
    python benchmarks/api_load.py --url http://127.0.0.1:7860 --key wy-...
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import load_dev_questions, percentiles, rss_mb, table, write_results  # noqa: E402


def start_server(args) -> tuple[str, object, object]:
    """(url, uvicorn server, app) of an in-process API server with the extractive backend."""
    import uvicorn

    from rag.api.app import create_app
    from rag.api.keys import KeyStore
    from rag.config import default_index_dir
    from rag.pipeline import RAG

    index_dir = Path(args.index_dir or default_index_dir())
    if (index_dir / "manifest.json").exists():
        rag = RAG.load(index_dir)
    else:
        index_dir = Path(tempfile.mkdtemp(prefix="wenyuan-load-")) / "idx"
        rag = RAG.build([ROOT / "tests" / "data" / "mini.txt"], index_dir=index_dir)
    rag.answerer.config = dataclasses.replace(rag.answerer.config, backend="extractive")
    print(f"index {index_dir}: {sum(len(i.chunks) for i in rag.indexes)} chunks, extractive answers")
    app = create_app(rag, keys=KeyStore(tempfile.mkdtemp(prefix="wenyuan-keys-"), env_keys=""),
                     concurrency=args.concurrency, max_queue=args.max_queue)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, app


def load_average() -> list[float]:
    """The machine's 1/5/15-minute load averages (other work on it skews the latencies)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


async def run_load(url: str, args, questions: list[str]) -> list[dict]:
    import httpx

    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    records: list[dict] = []
    in_flight = {"ask": 0}
    stop_at = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)

    async def client(n: int, http: httpx.AsyncClient) -> None:
        rnd = random.Random(n)
        while time.monotonic() < stop_at:
            question = rnd.choice(questions)
            kind = "ask" if rnd.random() < args.ask_share else "search"
            if kind == "ask":
                path, body = "/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": question}]}
                in_flight["ask"] += 1
            else:
                path, body = "/v1/search", {"question": question, "top_k": 5}
            busy = in_flight["ask"] > (1 if kind == "ask" else 0)
            started = time.perf_counter()
            record = {"kind": kind, "during_answers": busy}
            try:
                r = await http.post(url + path, json=body, headers=headers)
                record["status"] = r.status_code
                record["ok"] = r.status_code == 200 or (
                    r.status_code == 429 and r.headers.get("Retry-After", "").isdigit()
                    and bool(r.json().get("error", {}).get("message")))
                if r.status_code == 429:
                    await asyncio.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
            except Exception as e:  # noqa: BLE001 - a benchmark counts every failure
                record.update(status=type(e).__name__, ok=False)
            finally:
                if kind == "ask":
                    in_flight["ask"] -= 1
            record["ms"] = (time.perf_counter() - started) * 1000
            records.append(record)

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(args.clients)))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running server (default: start one in this process).")
    parser.add_argument("--key", default="", help="API key for --url.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--ask-share", type=float, default=0.3, help="Share of requests that ask for an answer.")
    parser.add_argument("--index-dir", default=None)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--save", action="store_true", help="Write benchmarks/results/<--name>.json.")
    parser.add_argument("--name", default="api_load", help="Results name for --save.")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    questions = [q["question"] for q in load_dev_questions(ROOT / "eval" / "dev_questions.jsonl")]
    server = None
    url = args.url
    if not url:
        url, server, _ = start_server(args)
    rss_before = rss_mb() if server else float("nan")
    load_before = load_average()
    started = time.perf_counter()
    records = asyncio.run(run_load(url, args, questions))
    elapsed = time.perf_counter() - started
    rss_after = rss_mb() if server else float("nan")
    load_after = load_average()
    if server:
        server.should_exit = True

    counts = Counter((r["kind"], r["status"]) for r in records)
    failed = [r for r in records if not r["ok"]]
    searches_busy = [r["ms"] for r in records if r["kind"] == "search" and r["status"] == 200 and r["during_answers"]]
    searches_idle = [r["ms"] for r in records if r["kind"] == "search" and r["status"] == 200 and not r["during_answers"]]
    answers = [r["ms"] for r in records if r["kind"] == "ask" and r["status"] == 200]
    rows = [
        {"what": "search while answers in flight", "n": len(searches_busy), **percentiles(searches_busy)},
        {"what": "search, no answer in flight", "n": len(searches_idle), **percentiles(searches_idle)},
        {"what": "answer (200)", "n": len(answers), **percentiles(answers)},
    ]
    print(f"\n{args.clients} clients, {elapsed:.0f} s, {len(records)} requests ({len(records) / elapsed:.1f}/s)")
    print("status counts:", ", ".join(f"{k}:{s}={n}" for (k, s), n in sorted(counts.items(), key=str)))
    print(f"failed requests (other than well-formed 429): {len(failed)}"
          + (f" e.g. {failed[:3]}" if failed else ""))
    print(table(rows))
    print(f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after" if server else "server RSS: not measured (--url)")
    print(f"load average (1/5/15 min, {os.cpu_count()} CPUs): {load_before} before, {load_after} after")
    if args.save:
        write_results(args.name, rows, url=args.url or "in-process", clients=args.clients, seconds=args.seconds, failed=len(failed),
                      status_counts={f"{k}:{s}": n for (k, s), n in counts.items()}, rss_before_mb=rss_before,
                      rss_after_mb=rss_after, load_average_before=load_before, load_average_after=load_after,
                      cpus=os.cpu_count())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
