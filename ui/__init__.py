"""问源 Wenyuan web UI (Gradio). Needs the ``ui`` extra: ``pip install -e ".[ui]"``."""
from __future__ import annotations

from ui.app import build_app, launch_app

__all__ = ["build_app", "launch_app"]
