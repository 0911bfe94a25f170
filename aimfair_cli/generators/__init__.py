"""Text-to-image generators behind one small interface (see `base.py`)."""

from .base import Generator, ImageRequest, image_seed, make_generator

__all__ = ["Generator", "ImageRequest", "image_seed", "make_generator"]
