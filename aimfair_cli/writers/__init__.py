"""Prompt writers behind one interface (see `base.py`): template (offline), openai, transformers."""

from .base import PromptWriter, make_writer

__all__ = ["PromptWriter", "make_writer"]
