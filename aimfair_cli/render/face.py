"""Face geometry shared by both drawing styles: attributes + a seed -> a list of coloured shapes.

The geometry knows nothing about colours or pixels: each shape carries a colour *role* ("skin", "hair",
"lips", ...) that a style (`aimfair_cli.render.styles`) turns into a colour and draws its own way. Both
styles therefore show the same faces from the same (attributes, seed); only the look differs, which is the
domain gap between the "real" demo data and the generator.

Coordinates: face-local (u, v) has the face's half-width as unit, u to the image right, v down, v = -1 at the
top of the skull and +1 at the chin. Points on the face surface get a depth z from a sphere, so turning the
head (yaw) or tilting it (pitch) moves the eyes, nose and mouth the way a 3-D head would; the silhouette
stays put. The final canvas coordinates are in [0, 1] (multiplied by the pixel size by the style).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .attributes import FaceAttributes

TAU = 2 * math.pi


@dataclass
class Shape:
    kind: str  # "poly" (filled polygon) or "line" (polyline)
    pts: np.ndarray  # (N, 2) canvas coordinates in [0, 1]
    role: str  # colour role, resolved by the style
    width: float = 0.0  # line width as a fraction of the canvas side
    outline: bool = False  # the synthetic style outlines these (cel look)
    only: str | None = None  # draw in this style only


@dataclass
class FaceParams:
    """Continuous per-image variation drawn from the seed: identical for both styles."""

    cx: float
    cy: float
    w: float  # face half-width, canvas units
    aspect: float  # half-height / half-width
    yaw: float  # radians, + turns the face to the image right
    pitch: float  # radians, + tilts the face up
    roll: float  # radians
    smile: float  # -0.3 (slightly down) .. 1 (broad smile)
    mouth_open: float  # 0 closed .. 1 wide open
    mouth_w: float
    mouth_v: float
    eye_dx: float
    eye_v: float
    eye_w: float
    eye_h: float
    brow_thick: float
    brow_v: float
    brow_tilt: float
    nose_len: float
    hair_volume: float
    hairline: float
    jitter: dict[str, float] = field(default_factory=dict)  # colour jitters, variants, light direction


EXPRESSIONS = ("natural", "posed", "subtle")
CLOSED_LIP_SMILES = 0.26  # share of natural smiles that keep the lips closed
TALKING = 0.30  # share of natural unsmiling faces caught mid-word, mouth open
# The generator draws the same kinds of expression at other frequencies than the photos: more closed-lip smiles
# (42 % against 26 %), fewer talking faces (20 % against 30 %). The kinds match (the label means the same in both
# domains); only how often each occurs differs, a bias shift of the kind the paper describes. The shares are
# calibrated with the benchmark's non-method rows (benchmarks/demo_properties.py --regime): at 20 % closed-lip
# smiles a model trained on synthetic faces alone under-read the photos' smiles (the photos' blur, noise and
# uneven light weaken the cue), at 50 % it over-read them.
POSED_CLOSED_LIP_SMILES = 0.42
POSED_TALKING = 0.2


def draw_params(a: FaceAttributes, rng: np.random.Generator, *, expression: str = "natural") -> FaceParams:
    """Draw the continuous variation. A fixed number of draws, in a fixed order, whatever the attributes.

    `expression` (see `EXPRESSIONS`): "natural", as people look in photos; "posed", as a text-to-image model draws
    "smiling" and "not smiling": the same kinds of expression (open and closed-lip smiles, still and talking
    unsmiling faces, over the same ranges) at other frequencies (`POSED_CLOSED_LIP_SMILES`, `POSED_TALKING`);
    "subtle", a faint closed-mouth expression whatever `a.smiling` says, the faces whose Smiling label annotators
    could give either way, so the label cannot be read from the face."""
    r = rng.random(40)  # one block of uniforms: stating an attribute never shifts the others' randomness
    n = rng.standard_normal(12)
    male = a.gender == "male"
    aspect = {"oval": 1.30, "round": 1.14, "square": 1.22, "long": 1.46, "heart": 1.28}.get(a.face_shape, 1.3)
    pose = a.head_pose
    yaw = 0.07 * n[0]
    pitch = 0.06 * n[1]
    if pose == "left":
        yaw = -(0.32 + 0.30 * r[0])
    elif pose == "right":
        yaw = 0.32 + 0.30 * r[0]
    elif pose == "up":
        pitch = 0.30 + 0.25 * r[0]
    elif pose == "down":
        pitch = -(0.30 + 0.25 * r[0])
    closed_lips, talking = (POSED_CLOSED_LIP_SMILES, POSED_TALKING) if expression == "posed" else \
        (CLOSED_LIP_SMILES, TALKING)
    if a.smiling == "yes":
        # Mostly broad open smiles showing teeth, some closed-mouth ones (CelebA's annotators call those smiling
        # too). A closed-lip smile is labelled one when its corners clearly rise, so it is drawn broader than the
        # faintest open smile and well apart from the ambiguous "subtle" range.
        open_mouth = r[2] < 1 - closed_lips
        smile = (0.45 + 0.55 * r[1] ** 0.7) if open_mouth else (0.6 + 0.4 * r[1] ** 0.7)
        mouth_open = (0.6 + 0.4 * r[3]) if open_mouth else 0.0
    else:
        smile = -0.30 + 0.45 * r[1]
        mouth_open = (0.4 + 0.5 * r[3]) if r[2] < talking else 0.0  # talking, mid-word: open, no smile
    if expression == "subtle":  # the same range for both labels, between the natural ones and apart from both
        smile, mouth_open = 0.22 + 0.2 * r[1], 0.0
    return FaceParams(
        cx=0.5 + 0.025 * n[2],
        cy=0.45 + 0.02 * n[3],
        w=0.28 * (0.92 + 0.14 * r[4]) * (1.03 if male else 0.98),
        aspect=aspect * (0.96 + 0.08 * r[5]),
        yaw=yaw,
        pitch=pitch,
        roll=0.07 * n[4],
        smile=smile,
        mouth_open=mouth_open,
        mouth_w=0.52 + 0.08 * r[6] + (0.02 if male else 0.0),
        mouth_v=0.50 + 0.05 * r[7],
        eye_dx=0.36 + 0.06 * r[8],
        eye_v=-0.04 + 0.06 * r[9],
        eye_w=0.14 + 0.03 * r[10] + (0.0 if male else 0.012),
        eye_h=0.075 + 0.02 * r[11] + (0.0 if male else 0.01),
        brow_thick=(0.075 + 0.035 * r[12]) if male else (0.040 + 0.025 * r[12]),
        brow_v=-0.22 + 0.04 * r[13],
        brow_tilt=0.06 * n[5],
        nose_len=0.22 + 0.08 * r[14] + (0.03 if male else 0.0),
        hair_volume=0.04 + 0.08 * r[15],
        hairline=-0.55 + 0.10 * r[16] - (0.12 if a.age == "old" and male else 0.0),
        jitter={
            "skin": float(n[6]), "skin_r": float(n[7]), "hair": float(n[8]), "eye": float(n[9]),
            "clothes": float(r[17]), "clothes2": float(r[18]), "bg": float(r[19]), "bg2": float(r[20]),
            "bg3": float(r[21]), "bg4": float(r[22]), "hat_kind": float(r[23]), "glasses_kind": float(r[24]),
            "earring_kind": float(r[25]), "light_angle": float(r[26]), "light_strength": float(r[27]),
            "lips": float(r[28]), "ponytail_side": float(r[29]), "wrinkle": float(r[30]), "beard_len": float(r[31]),
            "texture": float(r[32]), "blur": float(r[33]), "noise": float(r[34]), "jpeg": float(r[35]),
            "bg_x": float(r[36]), "bg_y": float(r[37]), "cheek": float(r[38]), "curl": float(r[39]),
            "shade": float(n[10]), "bg_tone": float(n[11]),
        },
    )


# ---- small geometry helpers -----------------------------------------------------------------------------


@functools.cache
def _circle(n: int, a0: float, a1: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < TAU - 1e-9)
    return np.cos(t), np.sin(t)


def ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 20, a0: float = 0.0, a1: float = TAU) -> np.ndarray:
    c, s = _circle(n, a0, a1)
    return np.stack([cu + ru * c, cv + rv * s], axis=1)  # (n, 2)


@functools.cache
def _bezier_basis(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], axis=1)  # (n, 3)


def bezier(p0, p1, p2, n: int = 8) -> np.ndarray:
    """A quadratic Bezier curve through p0 and p2, pulled towards p1: (n, 2)."""
    return _bezier_basis(n) @ np.array((p0, p1, p2), dtype=float)


def outline(shape: str, n: int = 40, grow: float = 0.0) -> np.ndarray:
    """The face silhouette in (u, v): top of skull at v=-1, chin at v=1."""
    t = np.linspace(0.0, TAU, n, endpoint=False)
    s, c = np.sin(t), -np.cos(t)  # u, v on the unit circle; t=0 is the top
    v = c
    if shape == "square":
        u = np.sign(s) * np.abs(s) ** np.where(v > 0, 0.55, 0.9)
        v = np.sign(c) * np.abs(c) ** np.where(v > 0, 0.7, 1.0)
    elif shape == "heart":
        u = s * (1.04 - 0.36 * np.clip(v, 0, None) ** 1.3)
    elif shape == "round":
        u = s * (1.0 - 0.04 * np.clip(v, 0, None))
    elif shape == "long":
        u = s * (0.96 - 0.10 * np.clip(v, 0, None))
    else:  # oval
        u = s * (1.0 - 0.16 * np.clip(v, 0, None) ** 1.5)
    return np.stack([u * (1 + grow), v * (1 + grow)], axis=1)


@dataclass
class _Local:
    """Face-local points waiting to be projected (all shapes of a face are projected in one batch)."""

    uv: np.ndarray  # (N, 2)
    z: np.ndarray  # (N,), NaN where the depth comes from the surface (or 0 for silhouette points)
    surface: np.ndarray  # (N,) bool: on the face surface (moves with the head) or on the silhouette


class Projector:
    """Face-local (u, v[, z]) -> canvas [0, 1] through yaw, pitch and roll (orthographic).

    Calling it only records the points; `resolve` projects every shape of the face at once, which keeps the
    renderer fast (hundreds of faces per second on one core).
    """

    def __init__(self, p: FaceParams) -> None:
        self.p = p
        self.cy, self.sy = math.cos(p.yaw), math.sin(p.yaw)
        self.cp, self.sp = math.cos(p.pitch), math.sin(p.pitch)
        self.cr, self.sr = math.cos(p.roll), math.sin(p.roll)

    @staticmethod
    def depth(uv: np.ndarray) -> np.ndarray:
        u, v = uv[:, 0], uv[:, 1]
        return np.sqrt(np.clip(1.0 - 0.8 * u**2 - 0.35 * v**2, 0.05, None))

    def __call__(self, uv: np.ndarray, z: np.ndarray | float | None = None, *, surface: bool = True) -> _Local:
        uv = np.asarray(uv, dtype=float)
        n = len(uv)
        zz = np.full(n, np.nan) if z is None else np.broadcast_to(np.asarray(z, dtype=float), (n,))
        return _Local(uv, zz, np.full(n, surface))

    @staticmethod
    def join(*parts: _Local) -> _Local:
        """One polygon made of pieces projected differently (e.g. a hair cap: silhouette + hairline)."""
        return _Local(np.concatenate([p.uv for p in parts]), np.concatenate([p.z for p in parts]),
                      np.concatenate([p.surface for p in parts]))

    def resolve(self, shapes: list[Shape]) -> None:
        """Replace every shape's local points by canvas points, in place."""
        todo = [s for s in shapes if isinstance(s.pts, _Local)]
        if not todo:
            return
        uv = np.concatenate([s.pts.uv for s in todo])  # (M, 2)
        sizes = [len(s.pts.uv) for s in todo]
        surface = np.concatenate([s.pts.surface for s in todo])
        z = np.concatenate([s.pts.z for s in todo])
        missing = np.isnan(z)
        z = np.where(missing & surface, self.depth(uv), np.where(missing, 0.0, z))
        u, v = uv[:, 0], uv[:, 1]
        x = u * self.cy + z * self.sy
        z1 = -u * self.sy + z * self.cy
        y = v * self.cp - z1 * self.sp * 0.8
        flat = ~surface & missing  # the silhouette only shifts a little when the head tilts
        x = np.where(flat, u, x)
        y = np.where(flat, v - 0.04 * self.sp, y)
        X, Y = x * self.p.w, y * self.p.w * self.p.aspect
        pts = np.stack([self.p.cx + X * self.cr - Y * self.sr, self.p.cy + X * self.sr + Y * self.cr], axis=1)
        for s, part in zip(todo, np.split(pts, np.cumsum(sizes)[:-1])):
            s.pts = part


# ---- the face ---------------------------------------------------------------------------------------------


def build_shapes(a: FaceAttributes, p: FaceParams) -> list[Shape]:
    """Back-to-front list of shapes for one face."""
    P = Projector(p)
    j = p.jitter
    out: list[Shape] = []
    add = out.append
    male = a.gender == "male"

    out.extend(_background(a, p))

    # Neck and shoulders (clothes), below the head.
    neck_u = 0.42 if male else 0.34
    neck = np.array([[-neck_u, 0.55], [neck_u, 0.55], [neck_u * 1.1, 1.45], [-neck_u * 1.1, 1.45]])
    add(Shape("poly", P(neck, surface=False), "neck", outline=True))
    sh_w = 1.9 if male else 1.6
    shoulders = ellipse(0.0, 2.05, sh_w, 0.75, 28)
    add(Shape("poly", P(shoulders, surface=False), "clothes", outline=True))
    collar = np.array([[-neck_u * 1.1, 1.32], [0.0, 1.55 + 0.1 * j["clothes2"]], [neck_u * 1.1, 1.32]])
    add(Shape("line", P(collar, surface=False), "clothes_dark", width=0.012))

    # Hair that falls behind the head.
    out.extend(_back_hair(a, p, P))

    # Ears: behind the face, pushed back in depth so the far ear hides when the head turns.
    for side in (-1, 1):
        ear = ellipse(side * 1.0, 0.02, 0.14, 0.22, 12)
        add(Shape("poly", P(ear, z=-0.35), "skin_dark", outline=True))

    face = outline(a.face_shape)
    add(Shape("poly", P(face, surface=False), "skin", outline=True))
    out.extend(_cel_shadow(p, P, face))
    out.extend(_age_lines(a, p, P))
    out.extend(_cheeks(a, p, P))
    out.extend(_facial_hair(a, p, P))
    out.extend(_eyes(a, p, P))
    out.extend(_nose(p, P))
    out.extend(_mouth(a, p, P))
    out.extend(_front_hair(a, p, P))
    out.extend(_glasses(a, p, P))
    out.extend(_hat(a, p, P))
    out.extend(_earrings(a, p, P))
    P.resolve(out)
    return out


def _background(a: FaceAttributes, p: FaceParams) -> list[Shape]:
    j = p.jitter
    full = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    out = [Shape("poly", full, "bg")]
    bx, by = j["bg_x"], j["bg_y"]
    if a.background == "outdoor":
        horizon = 0.45 + 0.2 * by
        out.append(Shape("poly", np.array([[0, horizon], [1, horizon - 0.1 * (bx - 0.5)], [1, 1], [0, 1]]), "ground"))
        for k in range(4):  # trees / bushes
            cx = (bx + 0.29 * k) % 1.0
            out.append(Shape("poly", ellipse(cx, horizon - 0.05, 0.12 + 0.05 * ((k * 7 + by * 10) % 1), 0.16, 14) * 1.0,
                             "foliage"))
    elif a.background == "indoor":
        floor = 0.72 + 0.1 * by
        out.append(Shape("poly", np.array([[0, floor], [1, floor], [1, 1], [0, 1]]), "floor"))
        wx = 0.05 + 0.6 * bx
        out.append(Shape("poly", np.array([[wx, 0.08], [wx + 0.3, 0.08], [wx + 0.3, 0.45], [wx, 0.45]]), "window"))
        out.append(Shape("line", np.array([[wx + 0.15, 0.08], [wx + 0.15, 0.45]]), "frame_bg", width=0.015))
        sx = (wx + 0.55) % 0.9
        out.append(Shape("poly", np.array([[sx, 0.3], [sx + 0.12, 0.3], [sx + 0.12, floor], [sx, floor]]), "furniture"))
    elif a.background in ("plain", "light", "dark"):
        # A soft second tone (studio backdrop fall-off).
        out.append(Shape("poly", ellipse(0.5 + 0.3 * (bx - 0.5), 0.35, 0.55, 0.45, 24), "bg2"))
    return out


def _back_hair(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    style, vol = a.hair_style, p.hair_volume
    out: list[Shape] = []
    if a.hat == "yes" and style in ("short", "bald", "curly"):
        return out
    if style in ("long", "wavy", "medium", "bangs"):
        bottom = {"long": 1.75, "wavy": 1.7, "medium": 0.75, "bangs": 1.0}[style]
        width = 1.16 + vol + (0.12 if style == "wavy" else 0.0)
        t = np.linspace(0.0, math.pi, 22)
        top = np.stack([-width * np.cos(t), -0.2 - (0.86 + vol) * np.sin(t)], axis=1)  # left temple -> right
        vs = np.linspace(-0.2, bottom, 9)
        # Sides fall straight, then curve in at the ends; waves ripple down wavy hair.
        taper = 1.0 - 0.18 * np.clip((vs - bottom + 0.5) / 0.5, 0, 1) ** 2
        wave = 0.08 * np.sin(vs * 9 + 6 * p.jitter["curl"]) if style == "wavy" else 0.0
        right = np.stack([width * 1.02 * taper + wave, vs], axis=1)
        left = np.stack([-width * 1.02 * taper[::-1] - (wave[::-1] if style == "wavy" else 0.0), vs[::-1]], axis=1)
        tips = bezier((width * 0.84, bottom), (0.0, bottom + 0.12), (-width * 0.84, bottom), 7)
        poly = np.concatenate([top, right, tips[1:-1], left])
        out.append(Shape("poly", P(poly, surface=False), "hair", outline=True))
    elif style == "ponytail":
        side = 1 if p.jitter["ponytail_side"] > 0.5 else -1
        tail = ellipse(side * 1.05, 0.35, 0.22, 0.55, 14)
        out.append(Shape("poly", P(tail, z=-0.4), "hair", outline=True))
    elif style == "curly":
        r = 1.22 + vol
        for k in range(14):  # a cloud of curls around the head, behind the face, from the left over the top
            theta = math.pi * (1.05 + k / 13 * 0.9)
            cu, cv = r * math.cos(theta), -0.35 + 0.75 * math.sin(theta)
            out.append(Shape("poly", P(ellipse(cu * 0.95, cv, 0.26, 0.26, 10), surface=False), "hair", outline=True))
    return out


def _front_hair(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    style, vol = a.hair_style, p.hair_volume
    out: list[Shape] = []
    if style == "bald":
        if a.age != "young":  # a fringe of hair around the sides of the head
            for side in (-1, 1):
                patch = np.array([[side * 1.02, -0.45], [side * 0.86, -0.3], [side * 0.9, 0.0], [side * 1.03, 0.0]])
                out.append(Shape("poly", P(patch, surface=False), "hair", outline=True))
        # A highlight on the scalp makes the bare skull read as bald in both styles.
        out.append(Shape("poly", P(ellipse(-0.25, -0.78, 0.22, 0.09, 10), z=0.6), "scalp_shine"))
        return out
    if a.hat == "yes":
        vol = 0.0
    top_r = 1.04 + vol
    # Outer edge of the cap: from the left temple over the skull to the right temple.
    side_v = {"short": -0.10, "curly": 0.05, "medium": 0.55, "bangs": 0.6, "long": 0.5, "wavy": 0.5,
              "ponytail": -0.15, "bun": -0.15}.get(style, -0.1)
    t = np.linspace(-0.5 * math.pi, 0.5 * math.pi, 20)  # -pi/2: left temple, 0: top, pi/2: right temple
    outer = np.stack([top_r * np.sin(t) * 1.03, -top_r * np.cos(t) - 0.02], axis=1)
    outer[outer[:, 1] > -0.2, 1] = -0.2
    outer = np.concatenate([[[-1.05 - vol, side_v]], outer, [[1.05 + vol, side_v]]])
    # Inner edge: the hairline across the forehead (on the face surface, so it follows the head's turn).
    hl = p.hairline
    if style == "bangs":
        inner = bezier((0.98, side_v), (0.9, -0.25), (0.55, -0.32), 6)
        inner = np.concatenate([inner, bezier((0.55, -0.32), (0.0, -0.28), (-0.55, -0.32), 7)[1:],
                                bezier((-0.55, -0.32), (-0.9, -0.25), (-0.98, side_v), 6)[1:]])
    else:
        inner = np.concatenate([
            bezier((0.98, side_v), (0.92, hl + 0.25), (0.55, hl + 0.05), 6),
            bezier((0.55, hl + 0.05), (0.0, hl - 0.05), (-0.55, hl + 0.05), 7)[1:],
            bezier((-0.55, hl + 0.05), (-0.92, hl + 0.25), (-0.98, side_v), 6)[1:],
        ])
    cap = P.join(P(outer, surface=False), P(inner))
    out.append(Shape("poly", cap, "hair", outline=True))
    if style == "curly":
        for k in range(7):  # curls along the hairline
            cu = -0.75 + 1.5 * k / 6
            cv = hl + 0.05 + 0.08 * math.cos(k * 1.7 + 6 * p.jitter["curl"])
            out.append(Shape("poly", P(ellipse(cu, cv - 0.05, 0.14, 0.12, 8)), "hair", outline=True))
    elif style in ("long", "wavy", "short", "medium"):
        # A parting / strand line gives the hair some structure.
        part = bezier((0.2 - 0.4 * p.jitter["curl"], hl - 0.02), (0.0, -0.9), (-0.1, -1.0 - vol), 5)
        out.append(Shape("line", P(part, surface=False), "hair_dark", width=0.01))
    if style == "bun":
        out.append(Shape("poly", P(ellipse(0.0, -1.12 - vol, 0.34, 0.24, 14), surface=False), "hair", outline=True))
    if a.facial_hair == "none" and a.gender == "male" and style in ("short", "curly"):
        for side in (-1, 1):  # sideburns
            sb = np.array([[side * 0.98, -0.1], [side * 0.88, -0.1], [side * 0.9, 0.15], [side * 0.99, 0.15]])
            out.append(Shape("poly", P(sb, surface=False), "hair"))
    return out


def _cel_shadow(p: FaceParams, P: Projector, face: np.ndarray) -> list[Shape]:
    # The synthetic style's flat two-tone shading: the side of the face away from the light.
    side = 1 if p.jitter["light_angle"] > 0.5 else -1
    # The outline starts at the top of the skull and runs clockwise, so each side is one contiguous run:
    # top -> chin on the right, chin -> top on the left.
    rim = face[(face[:, 0] * side) > 0.3]
    edge = np.array([[side * 0.62, 0.85], [side * 0.5, 0.0], [side * 0.62, -0.85]])
    poly = np.concatenate([rim, edge if side > 0 else edge[::-1]])
    return [Shape("poly", P(poly, surface=False), "skin_shadow", only="synthetic")]


def _age_lines(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    if a.age == "young":
        return []
    out = []
    n_lines = 1 if a.age == "middle" else 3
    for k in range(n_lines):  # forehead
        v = -0.42 + 0.07 * k
        out.append(Shape("line", P(bezier((-0.4, v), (0.0, v - 0.04), (0.4, v), 5)), "wrinkle", width=0.008))
    if a.age == "old":
        for side in (-1, 1):  # crow's feet and under-eye bags
            eu = side * (p.eye_dx + p.eye_w + 0.04)
            for dv in (-0.04, 0.03):
                out.append(Shape("line", P(np.array([[eu, p.eye_v + dv * 0.5], [eu + side * 0.1, p.eye_v + dv * 1.8]])),
                                 "wrinkle", width=0.007))
            bag = bezier((side * (p.eye_dx - p.eye_w), p.eye_v + 0.13), (side * p.eye_dx, p.eye_v + 0.19),
                         (side * (p.eye_dx + p.eye_w), p.eye_v + 0.12), 5)
            out.append(Shape("line", P(bag), "wrinkle", width=0.007))
    for side in (-1, 1):  # deep nasolabial folds with age, whatever the expression
        fold = bezier((side * 0.2, 0.28), (side * 0.34, 0.38), (side * (p.mouth_w + 0.08), 0.62), 5)
        out.append(Shape("line", P(fold), "wrinkle", width=0.007))
    return out


def _cheeks(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    """Smile cues beyond the mouth: raised cheeks and smile lines, stronger for broader smiles."""
    s = p.smile
    if s <= 0.2:
        return []
    out = []
    for side in (-1, 1):
        cheek = ellipse(side * 0.52, 0.3 - 0.06 * s, 0.22, 0.13 + 0.05 * s, 12)
        out.append(Shape("poly", P(cheek), "cheek"))
        fold = bezier((side * 0.22, 0.3), (side * (p.mouth_w + 0.16), 0.38),
                      (side * (p.mouth_w + 0.06), p.mouth_v + 0.04 - 0.05 * s), 6)
        out.append(Shape("line", P(fold), "smile_line", width=0.006 + 0.006 * s))
    return out


def _eyes(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    out = []
    squint = 0.55 * max(p.smile, 0.0)  # smiling eyes: the lower lid rises
    for side in (-1, 1):
        cu, cv = side * p.eye_dx, p.eye_v
        w, h = p.eye_w, p.eye_h
        top = bezier((cu - w, cv), (cu, cv - 2 * h), (cu + w, cv), 8)
        bottom = bezier((cu + w, cv), (cu, cv + 2 * h * (1 - squint)), (cu - w, cv), 8)
        almond = np.concatenate([top, bottom[1:-1]])
        out.append(Shape("poly", P(almond), "sclera"))
        iris_r = 0.62 * h * 1.6
        look = 0.25 * math.sin(p.yaw)  # eyes follow the head turn a little
        out.append(Shape("poly", P(ellipse(cu + look * w, cv + 0.1 * h, iris_r * 0.75, iris_r * 0.9, 10)), "iris"))
        out.append(Shape("poly", P(ellipse(cu + look * w, cv + 0.1 * h, iris_r * 0.35, iris_r * 0.4, 8)), "pupil"))
        out.append(Shape("line", P(top), "lid", width=0.014 if a.gender == "female" else 0.009))
        if squint > 0.1:
            out.append(Shape("line", P(bottom[2:-2]), "skin_line", width=0.006))
        # Brow: thicker for men on average, raised a little with a smile.
        bv = p.brow_v - 0.03 * max(p.smile, 0)
        tilt = p.brow_tilt * side
        b0 = (cu - side * w * 1.1, bv + 0.02 + tilt)
        b1 = (cu, bv - 0.05)
        b2 = (cu + side * w * 1.25, bv + 0.04 - tilt)
        upper = bezier(b0, b1, b2, 6)
        lower = bezier(b2, (b1[0], b1[1] + p.brow_thick), (b0[0], b0[1] + p.brow_thick * 0.8), 6)
        out.append(Shape("poly", P(np.concatenate([upper, lower])), "brow"))
    return out


def _nose(p: FaceParams, P: Projector) -> list[Shape]:
    L = p.nose_len
    tip_v = 0.08 + L
    ridge = np.array([[0.05, -0.02], [0.08, tip_v - 0.08]])
    z_ridge = Projector.depth(ridge) + np.array([0.1, 0.3])
    out = [Shape("line", P(ridge, z=z_ridge), "nose", width=0.008)]
    base = bezier((-0.14, tip_v - 0.02), (0.0, tip_v + 0.07), (0.14, tip_v - 0.02), 6)
    z_base = Projector.depth(base) + 0.3
    out.append(Shape("line", P(base, z=z_base), "nose", width=0.011))
    for side in (-1, 1):
        nostril = ellipse(side * 0.08, tip_v + 0.01, 0.035, 0.02, 6)
        out.append(Shape("poly", P(nostril, z=Projector.depth(nostril) + 0.25), "nostril"))
    return out


def _mouth(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    s, mw, mv = p.smile, p.mouth_w + 0.05 * max(p.smile, 0), p.mouth_v
    lift = 0.16 * s  # corners rise with a smile, drop a little when stern
    left, right = (-mw, mv - lift), (mw, mv - lift)
    lip_t = 0.045 + (0.015 if a.lipstick == "yes" else 0.0) - (0.01 if a.gender == "male" else 0.0)
    opening = 0.08 + 0.26 * p.mouth_open
    upper_line = bezier(left, (0.0, mv + 0.02 * s), right, 9)
    out: list[Shape] = []
    # Upper lip: between the mouth line and a cupid's bow above it.
    bow = np.concatenate([bezier(right, (mw * 0.4, mv - lip_t - 0.04), (0.0, mv - lip_t * 0.8), 5),
                          bezier((0.0, mv - lip_t * 0.8), (-mw * 0.4, mv - lip_t - 0.04), left, 5)[1:]])
    if p.mouth_open > 0:
        lower_ctrl = mv + 0.02 * s + 2.4 * opening * (0.6 + 0.4 * max(s, 0))
        lower_line = bezier(right, (0.0, lower_ctrl), left, 9)
        hole = np.concatenate([upper_line, lower_line[1:-1]])
        out.append(Shape("poly", P(hole), "mouth"))
        if s > 0.2:  # teeth show in an open smile
            teeth_low = bezier(right, (0.0, mv + 0.02 * s + 1.1 * opening), left, 9)  # upper teeth; dark below
            out.append(Shape("poly", P(np.concatenate([upper_line, teeth_low[1:-1]])), "teeth"))
        lower_edge = lower_line
    else:
        lower_ctrl = mv + 0.02 * s
        lower_edge = upper_line[::-1]
    out.append(Shape("poly", P(np.concatenate([upper_line, bow[1:-1]])), "lips"))
    # The lower lip hangs below the mouth's lower edge. A Bezier's middle sits halfway to its control point,
    # so the control is pushed down by twice the lip's thickness.
    chin_side = bezier(right, (0.0, lower_ctrl + 2 * (lip_t * 1.2 + 0.01)), left, 9)
    lower_lip = np.concatenate([lower_edge, chin_side[::-1][1:-1]])
    out.append(Shape("poly", P(lower_lip), "lips"))
    out.append(Shape("line", P(upper_line), "mouth_line", width=0.01))
    if a.facial_hair in ("moustache", "beard", "goatee"):
        mv_top = mv - lip_t - 0.12
        thick = 0.09 if a.facial_hair == "moustache" else 0.07
        st = np.concatenate([
            bezier((-mw - 0.06, mv - lift + 0.06), (0.0, mv_top - 0.04), (mw + 0.06, mv - lift + 0.06), 8),
            bezier((mw + 0.02, mv - lift + 0.02), (0.0, mv_top + thick + 0.02), (-mw - 0.02, mv - lift + 0.02), 8),
        ])
        out.append(Shape("poly", P(st), "beard"))
    return out


def _facial_hair(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    fh = a.facial_hair
    if fh in ("none", "moustache"):
        return []
    mv = p.mouth_v
    face = outline(a.face_shape, 60, grow=0.02)
    if fh in ("beard", "stubble"):
        extra = 0.12 + 0.25 * p.jitter["beard_len"] if fh == "beard" else 0.0
        jaw = face[face[:, 1] > 0.05]
        jaw = jaw[np.argsort(-np.arctan2(jaw[:, 1], jaw[:, 0]))]  # left cheek -> chin -> right cheek
        jaw[:, 1] += extra * np.clip(jaw[:, 1], 0, None)
        # Inner edge: around the mouth and up the cheeks, leaving the lips free.
        inner = np.concatenate([
            bezier((-0.88, 0.05), (-0.6, 0.45), (-p.mouth_w - 0.05, mv + 0.06), 5),
            bezier((-p.mouth_w - 0.05, mv + 0.06), (0.0, mv + 0.22), (p.mouth_w + 0.05, mv + 0.06), 6)[1:],
            bezier((p.mouth_w + 0.05, mv + 0.06), (0.6, 0.45), (0.88, 0.05), 5)[1:],
        ])
        # Out along the jaw (left -> right), back along the mouth (right -> left): one ring, no crossing.
        poly = np.concatenate([jaw, inner[::-1]])
        role = "beard" if fh == "beard" else "stubble"
        return [Shape("poly", P(poly, surface=False), role, outline=(fh == "beard"))]
    # goatee: a patch on the chin below the lower lip
    g = np.concatenate([bezier((-0.24, mv + 0.14), (0.0, mv + 0.1), (0.24, mv + 0.14), 5),
                        bezier((0.26, mv + 0.16), (0.0, 1.05 + 0.15 * p.jitter["beard_len"]), (-0.26, mv + 0.16), 7)])
    return [Shape("poly", P(g), "beard")]


def _glasses(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    if a.glasses == "no":
        return []
    out = []
    round_frames = p.jitter["glasses_kind"] < 0.5
    sun = a.glasses == "sunglasses"
    w = p.eye_w + 0.07
    h = (0.17 if round_frames else 0.13) + (0.03 if sun else 0.0)
    for side in (-1, 1):
        cu, cv = side * p.eye_dx, p.eye_v + 0.02
        if round_frames:
            rim = ellipse(cu, cv, w, h, 16)
        else:
            rim = np.array([[cu - w, cv - h], [cu + w, cv - h], [cu + w, cv + h * 0.8], [cu + w * 0.6, cv + h],
                            [cu - w * 0.6, cv + h], [cu - w, cv + h * 0.8]])
        if sun:
            out.append(Shape("poly", P(rim), "sunlens"))
        out.append(Shape("line", P(np.concatenate([rim, rim[:1]])), "frame", width=0.016 if sun else 0.012))
        temple = np.array([[side * (p.eye_dx + w), cv - h * 0.5], [side * 1.0, cv - h * 0.3]])
        out.append(Shape("line", P(temple, z=np.array([0.5, -0.1])), "frame", width=0.012))
    bridge = bezier((-p.eye_dx + w, p.eye_v), (0.0, p.eye_v - 0.06), (p.eye_dx - w, p.eye_v), 4)
    out.append(Shape("line", P(bridge), "frame", width=0.012))
    return out


def _hat(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    if a.hat != "yes":
        return []
    out = []
    t = np.linspace(math.pi, 2 * math.pi, 18)
    if p.jitter["hat_kind"] < 0.5:  # baseball cap: a crown and a brim pointing at the viewer
        crown = np.stack([1.12 * np.cos(t), -0.45 + 0.68 * np.sin(t)], axis=1)
        crown = np.concatenate([crown, [[1.12, -0.42], [-1.12, -0.42]]])
        out.append(Shape("poly", P(crown, surface=False), "hat", outline=True))
        brim = ellipse(0.0, -0.42, 0.95, 0.12, 14, 0.0, math.pi)
        brim = np.concatenate([[[-0.95, -0.45]], brim[::-1], [[0.95, -0.45]]])
        out.append(Shape("poly", P(brim, z=Projector.depth(brim) + 0.2), "hat2", outline=True))
    else:  # beanie: a round crown with a folded band
        crown = np.stack([1.1 * np.cos(t), -0.4 + 0.75 * np.sin(t)], axis=1)
        out.append(Shape("poly", P(np.concatenate([crown, [[1.1, -0.35], [-1.1, -0.35]]]), surface=False), "hat",
                         outline=True))
        band = np.array([[-1.12, -0.58], [1.12, -0.58], [1.12, -0.33], [-1.12, -0.33]])
        out.append(Shape("poly", P(band, surface=False), "hat2", outline=True))
    return out


def _earrings(a: FaceAttributes, p: FaceParams, P: Projector) -> list[Shape]:
    if a.earrings != "yes":
        return []
    out = []
    hoop = p.jitter["earring_kind"] < 0.5
    for side in (-1, 1):
        # The far ear's earring is hidden when the head turns away from it.
        if side * p.yaw < -0.25:
            continue
        cu, cv = side * 1.02, 0.26
        if hoop:
            ring = ellipse(cu, cv + 0.1, 0.07, 0.1, 12)
            out.append(Shape("line", P(np.concatenate([ring, ring[:1]]), z=-0.2), "earring", width=0.014))
        else:
            out.append(Shape("poly", P(ellipse(cu, cv + 0.03, 0.06, 0.06, 8), z=-0.2), "earring"))
    return out
