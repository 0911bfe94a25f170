"""`procedural`: the offline text-to-image generator. It reads the prompt through the published vocabulary
(`prompts/vocabulary.yaml`) and draws a face in the "synthetic" style (a generator's clean studio look and colour
grade), with the expressions a text-to-image model gives: the same kinds as real faces show (open and closed-lip
smiles, still and talking unsmiling faces), with more open smiles and fewer talking faces than photos have. The
label means the same in both domains; the gap is the look, the scene and how often each kind occurs.

Attributes the prompt states are honoured; the others come from the vocabulary's stereotyped defaults, so a
plain prompt gives near-identical faces and contextual prompts give diverse ones (AIM-Fair Fig. 4). Each
image depends only on its prompt and its own seed, never on the batch it is made in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Sequence

from ..core.errors import UsageError
from ..core.options import option
from .base import ImageRequest

if TYPE_CHECKING:
    from PIL import Image

    from ..render import FaceAttributes

log = logging.getLogger(__name__)



@dataclass
class ProceduralOptions:
    """The procedural generator's options (`aimfair synth --size`)."""

    size: int = option(64, min=16, max=1024, help="Image side in pixels.")

MSG_DIFFUSERS_ONLY = "option {names} applies to --generator diffusers only"
MSG_DIFFUSERS_ONLY_MANY = "options {names} apply to --generator diffusers only"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --generator procedural"
MSG_BAD_SIZE = "--size must be at least 16 pixels, got {size}"

# The attribute draw and the picture draw use different streams of the same image seed.
_ATTRIBUTE_STREAM = 0xA77


def _flags(names: Sequence[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in sorted(names))


class ProceduralGenerator:
    """Prompt -> face, on the CPU, in a few milliseconds per image."""

    name = "procedural"

    options = ProceduralOptions

    def __init__(self, *, size: int = ProceduralOptions.size, device: str | None = None,
                 vocabulary: str | os.PathLike | None = None, **unknown: Any) -> None:
        from .diffusion import DiffusersOptions

        diffusers_only = [k for k in unknown if k in {f.name for f in fields(DiffusersOptions)}]
        if len(diffusers_only) == 1:
            raise UsageError(MSG_DIFFUSERS_ONLY.format(names=_flags(diffusers_only)))
        if diffusers_only:
            raise UsageError(MSG_DIFFUSERS_ONLY_MANY.format(names=_flags(diffusers_only)))
        if unknown:
            raise UsageError(MSG_UNKNOWN_OPTIONS.format(names=_flags(list(unknown))))
        if int(size) < 16:
            raise UsageError(MSG_BAD_SIZE.format(size=size))
        from ..render.vocabulary import load_vocabulary

        self.size = int(size)
        self.device = device  # accepted for a uniform interface; drawing runs on the CPU
        self.vocabulary = load_vocabulary(vocabulary)

    def attributes(self, request: ImageRequest) -> "FaceAttributes":
        """The face a request is drawn as: stated attributes plus stereotyped defaults."""
        import numpy as np

        from ..render import attributes_from_prompt

        rng = np.random.default_rng([request.seed, _ATTRIBUTE_STREAM])
        return attributes_from_prompt(request.prompt, rng, vocabulary=self.vocabulary)

    def generate(self, requests: Sequence[ImageRequest]) -> list["Image.Image"]:
        from ..render import render_face

        return [render_face(self.attributes(r), style="synthetic", size=self.size, seed=r.seed, expression="posed")
                for r in requests]

    def describe(self) -> dict[str, Any]:
        from ..render import RENDERER_VERSION

        return {"generator": self.name, "size": self.size, "style": "synthetic",
                "vocabulary": self.vocabulary.sha256, "renderer": RENDERER_VERSION}
