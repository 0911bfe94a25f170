"""Procedural faces for the offline benchmark: one geometry model, two drawing styles.

    attrs = natural_attributes(rng, smiling=True, male=False)          # the demo's real-style data
    attrs = attributes_from_prompt("... smiling male ...", rng)          # the procedural generator
    image = render_face(attrs, style="photo" | "synthetic", size=64, seed=seed)

numpy and PIL only; `render_face` is a pure function of (attributes, style, size, seed, expression).
"""

from __future__ import annotations

from .attributes import FaceAttributes, attributes_from_prompt, draw_attributes
from .natural import NATURAL, natural_attributes

__all__ = [
    "NATURAL",
    "RENDERER_VERSION",
    "STYLES",
    "FaceAttributes",
    "attributes_from_prompt",
    "draw_attributes",
    "natural_attributes",
    "render_face",
]

STYLES = ("photo", "synthetic")
# Bump when a change to the drawing changes the pixels, so cached images made by an older renderer are
# recognised as stale (the procedural generator's describe() reports it).
RENDERER_VERSION = 12

MSG_BAD_STYLE = "unknown render style '{style}' (known: photo, synthetic)"
MSG_BAD_SIZE = "image size must be at least 16 pixels, got {size}"
MSG_BAD_EXPRESSION = "unknown expression '{expression}' (known: {known})"


def render_face(attrs: FaceAttributes, *, style: str, size: int = 64, seed: int = 0, expression: str = "natural"):
    """Draw one face as a `size` x `size` RGB PIL image. Same arguments -> same pixels. `expression`: natural,
    posed (a text-to-image model's stereotyped smile) or subtle (the label does not show; see
    `face.draw_params`)."""
    import numpy as np
    from PIL import Image

    from ..core.errors import UsageError
    from .face import EXPRESSIONS, build_shapes, draw_params
    from .styles import FINISH, SUPERSAMPLE, draw_shapes, palette

    if style not in STYLES:
        raise UsageError(MSG_BAD_STYLE.format(style=style))
    if size < 16:
        raise UsageError(MSG_BAD_SIZE.format(size=size))
    if expression not in EXPRESSIONS:
        raise UsageError(MSG_BAD_EXPRESSION.format(expression=expression, known=", ".join(EXPRESSIONS)))
    rng = np.random.default_rng(seed)
    # geometry first: the same seed and expression give the same face in both styles
    params = draw_params(attrs, rng, expression=expression)
    shapes = build_shapes(attrs, params)
    ss = SUPERSAMPLE[style]
    img = draw_shapes(shapes, palette(style, attrs, params), size=size * ss, style=style)
    if ss > 1:
        img = img.resize((size, size), Image.LANCZOS)
    return FINISH[style](img, attrs, params, rng)
