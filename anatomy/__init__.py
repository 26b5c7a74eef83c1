"""Data Anatomy: look inside a language model's training data (see README.md)."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (a test checks it)
