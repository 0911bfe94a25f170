"""The paper's published numbers that aimfair's reports stand beside its own (AIM-Fair, CVPR 2025).

Tab. 3, CelebA, target Smiling, protected Male, 10 seeds, ResNet-18 at 224 px from ImageNet weights: ACC, WST,
EO and STD in percent, keyed by the names of the study rows they correspond to.
"""

from __future__ import annotations

TAB3_CELEBA_SMILING_MALE: dict[str, tuple[float, float, float, float]] = {
    "pretrained": (89.23, 71.52, 23.84, 10.65),
    "synthetic": (85.98, 78.52, 7.87, 4.07),
    "supplement": (89.77, 73.67, 21.96, 9.76),
    "repair": (89.72, 75.05, 21.18, 9.50),
    "linear": (89.69, 77.41, 17.51, 7.71),
    "full": (88.77, 82.74, 6.83, 3.31),
    "aimfair": (89.02, 84.20, 6.07, 2.74),
}
TAB3_METRICS = ("acc", "wst", "eo", "std")
