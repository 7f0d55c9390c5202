"""问源 Wenyuan web UI (Gradio; the ``ui`` extra: ``pip install -e ".[ui]"``).

``ui.app`` builds the Gradio app and ``ui.cli`` the ``rag serve`` command; both
need gradio. ``ui.uploads`` and ``ui.render`` do not, so upload handling and
answer rendering work (and are tested) without the extra. This package imports
nothing itself: ``from ui.app import build_app, launch_app``.
"""
