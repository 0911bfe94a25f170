"""The "natural" attribute distribution of the demo's real-style faces (not drawn from prompts).

It is broad where the generator's stereotypes are narrow: every pose, hair style, accessory, skin tone,
background and lighting occurs. Gender cues are statistical, not rules: most men have short hair and many
have facial hair, most women have longer hair and many wear lipstick or earrings, yet some women have short
hair and some men long hair. A classifier trained on biased data can therefore use these cues as a shortcut
for the target, which is what makes the demo's train split unfair.
"""

from __future__ import annotations

from typing import Any

from .attributes import FaceAttributes, draw_attributes

NATURAL: dict[str, Any] = {
    "order": ["gender", "smiling", "age", "race", "skin_tone", "hair_style", "hair_color", "facial_hair", "glasses",
              "hat", "earrings", "lipstick", "eye_color", "face_shape", "head_pose", "background", "lighting"],
    "base": {
        "gender": {"male": 1, "female": 1},
        "smiling": {"yes": 1, "no": 1},
        "age": {"young": 70, "middle": 20, "old": 10},
        "race": {"white": 70, "non_white": 30},
        "skin_tone": {"light": 80, "medium": 20},
        "hair_style": {"short": 64, "medium": 7, "long": 4, "curly": 9, "wavy": 2, "bald": 10, "bangs": 2,
                       "ponytail": 1, "bun": 1},
        "hair_color": {"black": 35, "brown": 35, "blond": 18, "red": 5, "gray": 7},
        "facial_hair": {"none": 1},
        "glasses": {"no": 84, "yes": 13, "sunglasses": 3},
        "hat": {"no": 92, "yes": 8},
        "earrings": {"no": 96, "yes": 4},
        "lipstick": {"no": 97, "yes": 3},
        "eye_color": {"brown": 40, "blue": 20, "green": 10, "hazel": 12, "gray": 6, "dark": 12},
        "face_shape": {"oval": 30, "round": 18, "square": 30, "long": 14, "heart": 8},
        "head_pose": {"frontal": 44, "left": 15, "right": 15, "up": 13, "down": 13},
        "background": {"plain": 30, "light": 15, "dark": 12, "outdoor": 23, "indoor": 20},
        "lighting": {"soft": 30, "bright": 25, "dim": 15, "side": 15, "warm": 15},
    },
    "when": [
        {"if": {"gender": "female"}, "then": {
            "hair_style": {"short": 5, "medium": 17, "long": 36, "curly": 8, "wavy": 15, "bald": 0.5, "bangs": 8,
                           "ponytail": 6, "bun": 5},
            "earrings": {"no": 55, "yes": 45},
            "lipstick": {"no": 25, "yes": 75},
            "face_shape": {"oval": 40, "round": 22, "square": 8, "long": 12, "heart": 18},
            "hat": {"no": 94, "yes": 6},
        }},
        {"if": {"gender": "male"}, "then": {
            "facial_hair": {"none": 40, "beard": 19, "stubble": 20, "moustache": 10, "goatee": 11},
        }},
        {"if": {"race": "non_white"}, "then": {
            "skin_tone": {"light": 10, "medium": 30, "tan": 30, "dark": 30},
            "hair_color": {"black": 75, "brown": 20, "gray": 5},
            "eye_color": {"brown": 50, "dark": 45, "hazel": 5},
        }},
        {"if": {"age": "middle"}, "then": {"hair_color": {"black": 25, "brown": 30, "blond": 10, "gray": 35}}},
        {"if": {"age": "old"}, "then": {"hair_color": {"gray": 80, "brown": 10, "black": 10}}},
    ],
}


def natural_attributes(rng, *, smiling: bool, male: bool) -> FaceAttributes:
    """A real-style face with the given target (smiling) and protected (male) values."""
    stated = {"smiling": "yes" if smiling else "no", "gender": "male" if male else "female"}
    return draw_attributes(NATURAL, stated, rng)
