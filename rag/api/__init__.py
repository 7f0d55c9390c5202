"""The HTTP API: OpenAI-compatible chat and a small REST API over one loaded `RAG`.

``create_app(rag)`` (``rag.api.app``) returns a FastAPI app; ``ui/server.py``
mounts the Gradio UI beside it so both share one process, one port and one
set of loaded models. This package needs the ``api`` extra (fastapi, uvicorn)
and never imports ``ui`` or gradio.
"""
