"""Small PNG bar charts drawn with Pillow, for the demo report (no plotting library needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .fsio import atomic_path

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def bar_chart(
    path: str | os.PathLike,
    *,
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    errors: dict[str, Sequence[float]] | None = None,
    ylabel: str = "%",
    ymax: float = 100.0,
    size: tuple[int, int] = (900, 420),
) -> Path:
    """Grouped bars: one cluster per entry of `groups`, one bar per series (values in the units of ymax),
    optional ± error whiskers."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=11)
    left, right, top, bottom = 60, 170, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.text((left, 10), title, fill="black", font=font)
    # axes and horizontal grid every 20 % of ymax
    for i in range(6):
        y = top + plot_h - plot_h * i / 5
        draw.line([(left, y), (left + plot_w, y)], fill="#E5E5E5")
        draw.text((8, y - 7), f"{ymax * i / 5:g}", fill="black", font=small)
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    draw.text((8, top - 22), ylabel, fill="black", font=small)

    names = list(series)
    n_groups, n_series = len(groups), max(1, len(names))
    slot = plot_w / max(1, n_groups)
    bar = slot * 0.8 / n_series
    for gi, group in enumerate(groups):
        x0 = left + gi * slot + slot * 0.1
        for si, name in enumerate(names):
            value = max(0.0, min(float(series[name][gi]), ymax))
            x = x0 + si * bar
            y = top + plot_h - plot_h * value / ymax
            draw.rectangle([x, y, x + bar - 2, top + plot_h], fill=PALETTE[si % len(PALETTE)])
            if errors and name in errors:
                e = plot_h * float(errors[name][gi]) / ymax
                cx = x + (bar - 2) / 2
                draw.line([(cx, y - e), (cx, y + e)], fill="black")
        label_w = draw.textlength(group, font=small)
        draw.text((left + gi * slot + (slot - label_w) / 2, top + plot_h + 8), group, fill="black", font=small)
    for si, name in enumerate(names):  # legend
        y = top + si * 20
        draw.rectangle([width - right + 15, y, width - right + 29, y + 14], fill=PALETTE[si % len(PALETTE)])
        draw.text((width - right + 35, y), name, fill="black", font=small)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
