"""The generator interface shared by `procedural` (offline, CPU) and `diffusers` (real models).

A generator turns a batch of `ImageRequest`s into PIL images. Each request carries its own seed, derived
from (base seed, group, index) by `image_seed`, so an image does not depend on the batch it was made in:
reruns reproduce it, resumed runs continue it and shards split the work without changing it.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from ..core.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    seed: int
    index: int  # position of the image within its group


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, requests: Sequence[ImageRequest]) -> list["Image.Image"]:
        """One image per request, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """The resolved settings (model, steps, size, ...), saved with the outputs."""
        ...


def image_seed(base_seed: int, group: str, index: int) -> int:
    """A stable 63-bit seed for image `index` of `group` (independent of Python's hash randomisation)."""
    digest = hashlib.sha256(f"{base_seed}:{group}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


GENERATORS = {
    "procedural": "aimfair_cli.generators.procedural:ProceduralGenerator",
    "diffusers": "aimfair_cli.generators.diffusion:DiffusersGenerator",
}


def make_generator(name: str, **options: Any) -> Generator:
    """Build a generator by name; options are passed to its constructor (None values are dropped)."""
    try:
        target = GENERATORS[name]
    except KeyError:
        raise UsageError(f"unknown generator '{name}' (known: {', '.join(GENERATORS)})") from None
    module, cls = target.split(":")
    factory = getattr(importlib.import_module(module), cls)
    return factory(**{k: v for k, v in options.items() if v is not None})
