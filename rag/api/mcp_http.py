"""The MCP server (`rag.api.mcp`) over streamable HTTP at ``/mcp``, inside the API app.

The route sits behind the same ``Authorization: Bearer`` check as ``/v1``
(open while no key exists); each MCP ``POST`` counts once toward the rate
limit. The SDK's session manager needs a running task group, so it is entered
in the app's lifespan (`mcp_lifespan`); uvicorn runs it, and Gradio's mount
keeps it. An MCP client registers ``{"url": "http://127.0.0.1:7860/mcp",
"headers": {"Authorization": "Bearer wy-..."}}``.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.api.deps import ApiError, authorize, check_key, error_response

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"


class KeyCheck:
    """ASGI wrapper: the ``/v1`` key check (and, for POST, the rate limit) before ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                if request.method == "POST":
                    await authorize(request)
                else:  # the GET event stream and the DELETE that ends a session
                    check_key(request)
            except ApiError as e:
                await error_response(e.status, e.message, e.code, e.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def add_mcp_route(app, rag, *, kb_name: str, gate, host: str = "127.0.0.1", resolve=None):
    """Serve ``rag`` over MCP streamable HTTP at ``/mcp`` of ``app``; returns the `MCPServer` (None without ``mcp``).

    ``host``: the address the server binds; on loopback the SDK also checks the
    ``Host``/``Origin`` headers (DNS-rebinding protection). ``resolve``: name -> RAG for the tools' ``kb`` argument.
    """
    try:
        from rag.api.mcp import build_mcp_server
    except ImportError as e:  # the api extra without mcp: the HTTP API still works
        logger.warning("no MCP at %s: the mcp package is missing (%s)", MCP_PATH, e)
        return None
    server = build_mcp_server(rag, kb_name, gate=gate, resolve=resolve)
    sdk_app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    endpoint = next(r.endpoint for r in sdk_app.routes if getattr(r, "path", None) == MCP_PATH)
    app.router.routes.append(Route(MCP_PATH, endpoint=KeyCheck(endpoint), include_in_schema=False))
    return server


@asynccontextmanager
async def mcp_lifespan(server) -> AsyncIterator[None]:
    """Run the MCP session manager (its task group) for the server's lifetime; nothing when ``server`` is None."""
    if server is None:
        yield
        return
    async with server.session_manager.run():
        yield
