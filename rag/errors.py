"""Errors raised by the library. Messages say how to fix the problem."""
from __future__ import annotations


class RagError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(RagError):
    """A configuration value or key is wrong."""


class CorpusError(RagError):
    """A document file cannot be read or holds no usable text."""


class IndexLoadError(RagError):
    """An index folder is missing, corrupt or was built with other settings."""


class ModelError(RagError):
    """A model cannot be found, provisioned or loaded."""


class QuestionError(RagError):
    """A question is empty, too long or otherwise unusable."""


class EvaluationError(RagError):
    """A question set, gold annotation or evaluation run cannot be used as asked."""


class UploadError(CorpusError):
    """An uploaded file breaks a limit or cannot be indexed."""

__all__ = ["RagError", "ConfigError", "CorpusError", "IndexLoadError", "ModelError", "QuestionError",
           "EvaluationError", "UploadError"]
