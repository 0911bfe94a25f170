"""Prompt writers behind one interface (see `base.py`, whose `WRITERS` registers them)."""

from .base import PromptWriter, make_writer

__all__ = ["PromptWriter", "make_writer"]
