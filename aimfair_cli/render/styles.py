"""The two drawing styles: "photo" (the demo's real-style data) and "synthetic" (the procedural generator).

They draw the same shapes (`aimfair_cli.render.face`) with different looks, so a model trained on one and
tested on the other meets a genuine domain shift:

- photo: natural skin and hair colours, anti-aliased edges (drawn at twice the size), smooth uneven
  lighting, skin texture, lens blur, sensor noise and JPEG artefacts.
- synthetic: what a text-to-image model's clean studio pictures look like from afar: a brighter, more
  saturated palette, even colours (less jitter), a two-tone shadow and contours a shade darker than their
  fill, an even fall-off of the light (the prompt's, or one drawn as the photos' are), a colour grade (more
  saturation and contrast, warm highlights) and a soft focus that varies from image to image over the photos'
  range, and none of a camera's noise, texture or compression.

How far apart the two are is calibrated (`benchmarks/demo_properties.py --regime`): a model trained on the
synthetic style alone should lose a few points of accuracy on the photo style, as Stable Diffusion images
lose against CelebA in the paper (Tab. 3), not fail on it.
"""

from __future__ import annotations

import functools
import io
from typing import Callable

import numpy as np

from .attributes import FaceAttributes
from .face import FaceParams, Shape

Color = tuple[int, int, int]

STYLES = ("photo", "synthetic")

# ---- palettes ----------------------------------------------------------------------------------------------

PHOTO = {
    "skin": {"light": (228, 192, 168), "medium": (198, 154, 118), "tan": (160, 114, 80), "dark": (100, 68, 48)},
    "hair": {"black": (30, 26, 24), "brown": (96, 62, 40), "blond": (196, 164, 112), "red": (150, 72, 38),
             "gray": (168, 164, 160)},
    "eye": {"brown": (92, 60, 36), "blue": (84, 122, 158), "green": (84, 122, 84), "hazel": (128, 100, 58),
            "gray": (122, 126, 132), "dark": (42, 32, 26)},
    "clothes": [(40, 52, 84), (120, 120, 124), (226, 226, 222), (30, 30, 32), (110, 36, 44), (92, 96, 60),
                (70, 100, 140), (190, 172, 140)],
    "lipstick": [(168, 32, 48), (196, 92, 112), (140, 40, 60)],
    "bg": {"plain": (150, 150, 148), "light": (226, 226, 220), "dark": (42, 42, 46), "outdoor": (152, 182, 210),
           "indoor": (200, 186, 160)},
    "sky_ground": (102, 122, 72), "foliage": (62, 96, 52), "floor": (122, 92, 62), "window": (204, 216, 228),
    "frame_bg": (238, 238, 236), "furniture": (108, 80, 56), "frame": [(28, 28, 28), (150, 120, 60)],
    "earring": [(212, 176, 60), (196, 196, 204)], "teeth": (232, 226, 212), "mouth": (62, 22, 26),
    "sclera": (232, 228, 222), "pupil": (14, 14, 14), "sunlens": (26, 26, 32),
}

SYNTHETIC = {
    "skin": {"light": (255, 224, 204), "medium": (244, 192, 142), "tan": (214, 152, 102), "dark": (152, 98, 66)},
    "hair": {"black": (44, 42, 74), "brown": (146, 84, 42), "blond": (252, 216, 92), "red": (224, 72, 42),
             "gray": (204, 204, 214)},
    "eye": {"brown": (142, 82, 30), "blue": (40, 122, 232), "green": (40, 172, 82), "hazel": (172, 132, 40),
            "gray": (142, 152, 172), "dark": (52, 30, 20)},
    "clothes": [(230, 60, 60), (60, 120, 230), (250, 200, 40), (60, 190, 110), (160, 80, 220), (250, 130, 40),
                (40, 200, 200), (240, 100, 170)],
    "lipstick": [(236, 40, 80), (250, 110, 160), (210, 30, 100)],
    "bg": {"plain": (192, 212, 238), "light": (250, 250, 244), "dark": (52, 42, 84), "outdoor": (122, 202, 250),
           "indoor": (250, 226, 182)},
    "sky_ground": (112, 202, 92), "foliage": (42, 152, 62), "floor": (192, 132, 82), "window": (182, 232, 255),
    "frame_bg": (255, 255, 255), "furniture": (170, 100, 60), "frame": [(20, 20, 40), (220, 160, 40)],
    # What a smile looks like is not a style: the open mouth and teeth are the photo's colours (the grade still
    # shifts them a little), so a model learns the same expression cue from either domain.
    "earring": [(255, 210, 40), (230, 230, 250)], "teeth": (236, 230, 218), "mouth": (70, 24, 30),
    "sclera": (255, 255, 255), "pupil": (20, 10, 30), "sunlens": (30, 20, 60),
}


def _mix(c: Color, k: float | tuple[float, float, float], add: Color = (0, 0, 0)) -> Color:
    k3 = (k, k, k) if isinstance(k, (int, float)) else k
    return tuple(min(255, max(0, int(c[i] * k3[i] + add[i]))) for i in range(3))  # type: ignore[return-value]


def _blend(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(a[i] * (1 - t) + b[i] * t)) for i in range(3))  # type: ignore[return-value]


def palette(style: str, a: FaceAttributes, p: FaceParams) -> dict[str, Color]:
    """Colour of every role for one face."""
    pal = PHOTO if style == "photo" else SYNTHETIC
    j = p.jitter
    spread = 0.07 if style == "photo" else 0.03  # the generator's colours vary less
    skin = _mix(pal["skin"].get(a.skin_tone, pal["skin"]["light"]), 1 + spread * j["skin"],
                (int(6 * j["skin_r"]), 0, int(-4 * j["skin_r"])))
    hair = _mix(pal["hair"].get(a.hair_color, pal["hair"]["brown"]), 1 + 1.5 * spread * j["hair"])
    eye = _mix(pal["eye"].get(a.eye_color, pal["eye"]["brown"]), 1 + spread * j["eye"])
    clothes = pal["clothes"][int(j["clothes"] * len(pal["clothes"])) % len(pal["clothes"])]
    hat = pal["clothes"][int(j["clothes2"] * len(pal["clothes"])) % len(pal["clothes"])]
    natural_lips = _mix(skin, (0.86, 0.70, 0.72))
    lips = pal["lipstick"][int(j["lips"] * 3) % 3] if a.lipstick == "yes" else natural_lips
    bg = pal["bg"].get(a.background, pal["bg"]["plain"])
    if a.background == "plain":  # studio backdrops come in several tones
        bg = _mix(bg, 1 + (0.25 if style == "photo" else 0.08) * j["bg_tone"],
                  (int(20 * (j["bg3"] - 0.5)), 0, int(20 * (j["bg4"] - 0.5))))
    brow = _mix(hair, 0.75) if a.hair_color not in ("blond", "gray") else _mix(hair, 0.6)
    return {
        "bg": bg, "bg2": _mix(bg, 1.12), "ground": pal["sky_ground"], "foliage": pal["foliage"],
        "floor": pal["floor"], "window": pal["window"], "frame_bg": pal["frame_bg"], "furniture": pal["furniture"],
        "clothes": clothes, "clothes_dark": _mix(clothes, 0.6),
        "skin": skin, "neck": _mix(skin, 0.86), "skin_dark": _mix(skin, 0.9), "skin_shadow": _mix(skin, (0.84, 0.78, 0.86)),
        "skin_line": _mix(skin, 0.8), "wrinkle": _mix(skin, 0.76), "smile_line": _mix(skin, 0.74),
        "cheek": _mix(skin, (1.05, 0.92, 0.92), (12, 0, 0)), "scalp_shine": _mix(skin, 1.1, (10, 10, 10)),
        "nose": _mix(skin, 0.78), "nostril": _mix(skin, 0.5),
        "hair": hair, "hair_dark": _mix(hair, 0.7, (0, 0, 0)), "brow": brow,
        "beard": _mix(hair, 0.9), "stubble": _blend(skin, _mix(hair, 0.8), 0.35),
        "sclera": pal["sclera"], "iris": eye, "pupil": pal["pupil"], "lid": _mix(brow, 0.6),
        "lips": lips, "mouth_line": _mix(lips, 0.6), "mouth": pal["mouth"], "teeth": pal["teeth"],
        "frame": pal["frame"][int(j["glasses_kind"] * 4) % 2], "sunlens": pal["sunlens"],
        "hat": hat, "hat2": _mix(hat, 0.8), "earring": pal["earring"][int(j["earring_kind"] * 4) % 2],
    }


# ---- drawing -----------------------------------------------------------------------------------------------


def draw_shapes(shapes: list[Shape], colors: dict[str, Color], *, size: int, style: str):
    """Rasterise the shapes on a `size` x `size` RGB canvas."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), colors["bg"])
    draw = ImageDraw.Draw(img)
    for s in shapes:
        if s.only is not None and s.only != style:
            continue
        xy = (s.pts * size).ravel().tolist()  # flat [x0, y0, x1, y1, ...]
        color = colors[s.role]
        if s.kind == "poly":
            if len(xy) < 6:
                continue
            if style == "synthetic" and s.outline:
                draw.polygon(xy, fill=color, outline=_mix(color, 0.72))
            else:
                draw.polygon(xy, fill=color)
        else:
            width = max(1, int(round(s.width * size)))
            draw.line(xy, fill=color, width=width)
    return img


# ---- finishing: lighting, texture, noise ----------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    from PIL import Image

    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    lo, hi = coarse.min(), coarse.max()
    img = Image.fromarray(((coarse - lo) / (hi - lo + 1e-6) * 255).astype(np.uint8))
    field = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return field * 2 - 1  # (size, size) in [-1, 1]


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5  # (H, W) each, in [-0.5, 0.5)
    return ys, xs


def _light(size: int, angle: float, strength: float, *, vignette: float, exposure: float = 1.0) -> np.ndarray:
    """(H, W) light: a linear ramp along `angle` (a turn fraction) of `strength`, darkened towards the corners."""
    ys, xs = _grid(size)
    ang = angle * 2 * np.pi
    ramp = xs * np.cos(ang) + ys * np.sin(ang)
    return exposure * (1.0 + strength * ramp) * (1.0 - vignette * (xs**2 + ys**2))


def finish_photo(img, a: FaceAttributes, p: FaceParams, rng: np.random.Generator):
    """Camera look: uneven light, texture, blur, sensor noise, JPEG."""
    from PIL import Image, ImageFilter

    size = img.size[0]
    j = p.jitter
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3)
    strength = {"soft": 0.25, "bright": 0.3, "dim": 0.4, "side": 0.9, "warm": 0.35}.get(a.lighting, 0.3)
    strength *= 0.7 + 0.6 * j["light_strength"]
    exposure = {"soft": 1.0, "bright": 1.15, "dim": 0.62, "side": 0.95, "warm": 1.0}.get(a.lighting, 1.0)
    tint = {"warm": (1.08, 0.97, 0.80), "dim": (0.95, 0.97, 1.05)}.get(a.lighting, (1.0, 1.0, 1.0))
    light = _light(size, j["light_angle"], strength, vignette=0.35, exposure=exposure)
    texture = 1.0 + 0.06 * _smooth_field(rng, size, 9)
    arr = arr * (light * texture)[..., None] * np.asarray(tint, dtype=np.float32)
    img = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(radius=(0.25 + 0.5 * j["blur"]) * size / 64))
    arr = np.asarray(img, dtype=np.float32)
    sigma = (2.5 + 5.0 * j["noise"]) * (1.6 if a.lighting == "dim" else 1.0)
    arr = arr + rng.normal(0.0, sigma, arr.shape).astype(np.float32) + rng.normal(0.0, sigma * 0.5, arr.shape[:2] + (1,)).astype(np.float32)
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(50 + 40 * j["jpeg"]))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


# The generator's colour grade: saturation and contrast pushed up and warm highlights, as text-to-image portraits
# tend to come out. It is the same on every synthetic image, so a model that co-trains on both styles can tell
# them apart at a glance and keep a separate rule for each (what the paper blames for supplementation's failure
# to debias); it is calibrated with the benchmark (benchmarks/demo_properties.py --regime), not the method.
GRADE_SATURATION, GRADE_CONTRAST, GRADE_TINT = 1.35, 1.2, (1.05, 1.0, 0.88)


def finish_synthetic(img, a: FaceAttributes, p: FaceParams, rng: np.random.Generator):
    """Studio look: the lighting's colour and a soft, even fall-off, the generator's colour grade, a soft focus
    (0.3-0.7 px at 64 px, drawn per image like the photos' lens blur); no noise, no compression."""
    from PIL import Image, ImageFilter

    size = img.size[0]
    gain = {"soft": (1.0, 1.0, 1.0), "bright": (1.08, 1.08, 1.08), "dim": (0.72, 0.72, 0.8),
            "side": (0.95, 0.95, 0.95), "warm": (1.06, 0.96, 0.8)}.get(a.lighting, (1.0, 1.0, 1.0))
    light = _light(size, p.jitter["light_angle"], 0.5 if a.lighting == "side" else 0.15, vignette=0.15)
    arr = np.asarray(img, dtype=np.float32) * light[..., None] * np.asarray(gain, dtype=np.float32)
    grey = arr.mean(axis=-1, keepdims=True)
    arr = grey + GRADE_SATURATION * (arr - grey)
    arr = (128 + GRADE_CONTRAST * (arr - 128)) * np.asarray(GRADE_TINT, dtype=np.float32)
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(radius=(0.3 + 0.4 * p.jitter["blur"]) * size / 64))


FINISH: dict[str, Callable] = {"photo": finish_photo, "synthetic": finish_synthetic}
SUPERSAMPLE = {"photo": 2, "synthetic": 2}  # both anti-aliased
