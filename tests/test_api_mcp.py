"""`rag mcp`: the knowledge base over MCP stdio, driven by the official SDK's stdio client."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "腾讯基金会计划出资多少？"

# The server process: the mini index with the fake embedder and a scripted generator (no models).
SERVER = """
import sys
sys.path.insert(0, {tests!r})
from conftest import FakeEmbedder, ScriptedGenerator, install_generator
from rag.api.mcp import build_mcp_server
from rag.build import build_index
from rag.config import Config
from rag.pipeline import RAG

config = Config().with_overrides(embedding={{"model": FakeEmbedder.model_name}})
embedder = FakeEmbedder()
index = build_index(["tests/data/mini.txt"], {index!r}, config, lambda: embedder)
rag = RAG([index], config, embedder=embedder)
install_generator(rag, ScriptedGenerator("腾讯基金会计划出资3亿元[1]。", "腾讯基金会的秘书长是张三。"))
build_mcp_server(rag).run("stdio")
"""


def _text(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content or json.loads(result.content[0].text)


async def _session(script: Path) -> dict:
    params = StdioServerParameters(command=sys.executable, args=[str(script)], cwd=str(ROOT),
                                   env={"WENYUAN_NO_PROGRESS": "1"})
    out: dict = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            out["search"] = _text(await session.call_tool("search", {"question": QUESTION, "top_k": 2}))
            out["ask"] = _text(await session.call_tool("ask", {"question": QUESTION}))
            out["refused"] = _text(await session.call_tool("ask", {"question": "腾讯基金会的秘书长是谁？"}))  # not in the documents
            out["empty"] = await session.call_tool("ask", {"question": "  "})
            resources = (await session.list_resources()).resources
            out["resources"] = [str(r.uri) for r in resources]
            read_back = await session.read_resource(resources[0].uri)
            out["kb"] = json.loads(read_back.contents[0].text)
    return out


def test_mcp_tools_search_and_ask_over_stdio(tmp_path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(tests=str(ROOT / "tests"), index=str(tmp_path / "idx")), encoding="utf-8")
    out = asyncio.run(asyncio.wait_for(_session(script), timeout=120))
    assert out["tools"] == ["ask", "search"]
    passages = out["search"]["passages"]
    assert len(passages) == 2 and passages[0]["doc_id"] == "doc-001" and passages[0]["rank"] == 1
    assert "3亿元" in out["ask"]["answer"] and out["ask"]["refused"] is False
    c = out["ask"]["citations"][0]
    assert c["doc_id"] == "doc-001" and f"[{c['marker']}]" in out["ask"]["answer"]
    assert out["refused"]["refused"] is True and out["refused"]["citations"] == []
    assert out["empty"].is_error and "empty" in out["empty"].content[0].text
    assert out["resources"] == ["wenyuan://kb/default"]
    assert out["kb"]["name"] == "default" and out["kb"]["documents"] >= 2 and out["kb"]["embedding_model"] == "fake-bigram"


def test_rag_mcp_command_is_registered() -> None:
    from rag.cli import cli

    result = CliRunner().invoke(cli, ["mcp", "--help"])
    assert result.exit_code == 0 and "MCP agents over stdio" in result.output and "--index-dir" in result.output
