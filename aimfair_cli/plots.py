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


def _axis(values: Sequence[float]):
    """A map value -> [0, 1] over the values' range: logarithmic when they are all positive and span more than
    a factor 20 (gradient differences often span decades), else linear. Returns (map, is_log)."""
    import math

    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > 20:
        a, b = math.log10(lo), math.log10(hi)
        pad = 0.05 * (b - a)
        return (lambda v: (math.log10(max(v, lo)) - a + pad) / (b - a + 2 * pad)), True
    pad = 0.05 * (hi - lo) or 0.5 * abs(hi) or 1.0
    return (lambda v: (v - lo + pad) / (hi - lo + 2 * pad)), False


def score_scatter(
    path: str | os.PathLike,
    *,
    title: str,
    x: Sequence[float],
    y: Sequence[float],
    groups: Sequence[str],
    highlighted: Sequence[bool],
    x_cut: tuple[float, float] | None = None,
    y_cut: tuple[float, float] | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    region_label: str = "",
    size: tuple[int, int] = (940, 560),
) -> Path:
    """One point per item at (x, y), coloured by its group, filled when highlighted and hollow otherwise.
    x_cut/y_cut (last value in, first value out) draw a dashed line between the two; the region left of x_cut
    and above y_cut is shaded. The legend counts highlighted/total per group."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    left, right, top, bottom = 70, 230, 56, 60
    pw, ph = width - left - right, height - top - bottom
    fx, x_log = _axis(x)
    fy, y_log = _axis(y)

    def px(v: float) -> float:
        return left + pw * fx(v)

    def py(v: float) -> float:
        return top + ph - ph * fy(v)

    def between(cut, to_px):  # the pixel halfway between the last value in and the first value out
        return (to_px(cut[0]) + to_px(cut[1])) / 2

    draw.text((left, 8), title, fill="black", font=font)
    xc = between(x_cut, px) if x_cut else None
    yc = between(y_cut, py) if y_cut else None
    if xc is not None and yc is not None:
        draw.rectangle([left, top, xc, yc], fill="#EAF4EA")
        if region_label:
            draw.text((left + 6, top + 4), region_label, fill="#2E7D32", font=small)
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    for cut_px, vertical in ((xc, True), (yc, False)):
        if cut_px is None:
            continue
        for s in range(0, pw if not vertical else ph, 10):  # dashed
            if vertical:
                draw.line([(cut_px, top + s), (cut_px, top + min(s + 5, ph))], fill="#555555")
            else:
                draw.line([(left + s, cut_px), (left + min(s + 5, pw), cut_px)], fill="#555555")
    for i, (lo_, hi_) in enumerate(((min(x), max(x)), (min(y), max(y)))):  # range labels at the axis ends
        fmt = "{:.3g}"
        if i == 0:
            draw.text((left, top + ph + 4), fmt.format(lo_), fill="black", font=small)
            label = fmt.format(hi_)
            draw.text((left + pw - draw.textlength(label, font=small), top + ph + 4), label, fill="black", font=small)
        else:
            draw.text((4, py(lo_) - 6), fmt.format(lo_), fill="black", font=small)
            draw.text((4, py(hi_) - 6), fmt.format(hi_), fill="black", font=small)
    draw.text((left + pw / 2 - 120, top + ph + 24), xlabel + (" (log scale)" if x_log else ""), fill="black", font=small)
    draw.text((4, top - 20), ylabel + (" (log scale)" if y_log else ""), fill="black", font=small)

    names = list(dict.fromkeys(groups))
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)}
    r = 5
    for xi, yi, g, h in zip(x, y, groups, highlighted):
        cx, cy = px(xi), py(yi)
        if h:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour[g], outline="black")
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour[g], width=2)
    lx = width - right + 15
    for i, g in enumerate(names):
        members = [h for gg, h in zip(groups, highlighted) if gg == g]
        ly = top + i * 20
        draw.ellipse([lx, ly + 2, lx + 10, ly + 12], fill=colour[g], outline="black")
        draw.text((lx + 18, ly), f"{g}: {sum(members)} of {len(members)}", fill="black", font=small)
    ly = top + len(names) * 20 + 12
    draw.ellipse([lx, ly + 2, lx + 10, ly + 12], fill="#8C8C8C", outline="black")
    draw.text((lx + 18, ly), "selected", fill="black", font=small)
    draw.ellipse([lx, ly + 22, lx + 10, ly + 32], outline="#8C8C8C", width=2)
    draw.text((lx + 18, ly + 20), "not selected", fill="black", font=small)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
