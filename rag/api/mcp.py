"""An MCP server over one knowledge base: tools ``search`` and ``ask``, the KB as a resource.

``rag mcp`` runs it over stdio (the official ``mcp`` SDK, the ``api`` extra),
so an agent gets the same cited answers and refusals as the chat UI; ``rag serve``
also serves it over streamable HTTP at ``/mcp`` (`rag.api.mcp_http`), where
``ask`` waits for a slot of the server's answer queue like any API answer.

Example:
    >>> server = build_mcp_server(RAG.load("index/default"))  # doctest: +SKIP
    >>> server.run("stdio")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from rag.api.deps import citations_json, passage_json
from rag.api.queue import AnswerGate, Busy
from rag.api.runner import AnswerRun
from rag.errors import RagError
from rag.questions import clean_question

logger = logging.getLogger(__name__)

MAX_TOP_K = 20


def build_mcp_server(rag, kb_name: str = "default", gate: AnswerGate | None = None, resolve=None) -> MCPServer:
    """An `MCPServer` whose tools answer from ``rag``; library errors become tool errors with their message.

    ``gate``: the HTTP server's answer queue; ``ask`` then generates in its turn (a full queue is a tool error).
    ``resolve``: name -> RAG; the tools then take an optional ``kb`` argument (another knowledge base).
    """

    def pick(kb: str | None):
        if not kb or kb == kb_name:
            return rag
        if resolve is None:
            raise ToolError(f"this server answers from {kb_name!r} only")
        try:
            return resolve(kb)
        except Exception as e:  # an unknown KB: the message lists the known ones
            raise ToolError(getattr(e, "message", str(e))) from e

    server = MCPServer(
        name="wenyuan", version="1",
        instructions=f"Knowledge base {kb_name!r}: Chinese documents. Use `search` for passages and `ask` for a short "
                     "answer whose claims carry [n] citations; a refused answer means the documents do not say.",
    )

    @server.tool(description="Top-k passages of the knowledge base for a question, best first "
                             "(kb: another knowledge base of this server, by name).")
    def search(question: str, top_k: int = 5, kb: str | None = None) -> dict:
        rag = pick(kb)
        try:
            question = clean_question(question, rag.config.generation.max_question_chars)
            passages = rag.retrieve(question, max(1, min(MAX_TOP_K, int(top_k))))
        except RagError as e:
            raise ToolError(str(e)) from e
        return {"question": question, "passages": [passage_json(p, i) for i, p in enumerate(passages, 1)]}

    @server.tool(description="A short answer with verified [n] citations, or refused=true when the documents do not "
                             "hold the answer.")
    async def ask(question: str, kb: str | None = None) -> dict:
        rag = await anyio.to_thread.run_sync(pick, kb)  # a KB's first use loads its index
        try:
            if gate is None:
                answer = await anyio.to_thread.run_sync(rag.ask, question)
            else:
                clean_question(question, rag.config.generation.max_question_chars)  # fail fast, before the queue
                answer = await AnswerRun(rag, gate, question).answer()
        except (RagError, Busy) as e:
            raise ToolError(str(e)) from e
        return {"answer": answer.text, "refused": answer.refused, "citations": citations_json(answer),
                "sources": [{"marker": i, "doc_id": p.doc_id, "title": p.title, "text": p.text}
                            for i, p in enumerate(answer.passages, 1)]}

    @server.resource(f"wenyuan://kb/{kb_name}", name=kb_name, mime_type="application/json",
                     description="The knowledge base: its documents and how its index was built.")
    def knowledge_base() -> str:
        documents = [d for index in rag.indexes for d in index.documents]
        return json.dumps({
            "name": kb_name, "documents": len(documents), "chunks": sum(len(i.chunks) for i in rag.indexes),
            "embedding_model": rag.config.embedding.model,
            "titles": [d.title for d in documents[:200]],
        }, ensure_ascii=False)

    return server
