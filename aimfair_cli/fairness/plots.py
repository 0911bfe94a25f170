"""PNG charts for the demo report, `mask --plot` and `eval --plot`. Bars, curves and histograms are drawn with
matplotlib when it is installed (the `plots` extra), with Pillow otherwise; the rest with Pillow."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.fsio import atomic_path

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def matplotlib_available() -> bool:
    """Charts are drawn with matplotlib when it is installed (`pip install 'aimfair[plots]'`), with Pillow
    otherwise; the files and what they show are the same."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _save(img, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _save_figure(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _title_and_grid(draw, title: str, ymax: float, box: tuple[float, float, float, float], font, small) -> None:
    """The title above a plot box (left, top, width, height), and a horizontal grid line with its value every
    20 % of `ymax`."""
    left, top, pw, ph = box
    draw.text((left, 10), title, fill="black", font=font)
    for i in range(6):
        y = top + ph - ph * i / 5
        draw.line([(left, y), (left + pw, y)], fill="#E5E5E5")
        draw.text((8, y - 7), f"{ymax * i / 5:g}", fill="black", font=small)


def _bar_image(*, title: str, groups: Sequence[str], series: dict[str, Sequence[float]],
               errors: dict[str, Sequence[float]] | None = None, ylabel: str = "%", ymax: float = 100.0,
               size: tuple[int, int] = (900, 420), line: float | None = None, labels: bool = True):
    """Grouped bars (Pillow): one cluster per group, one bar per series, ± whiskers, the value above each bar,
    an optional dashed horizontal reference line at `line`."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=11)
    tiny = ImageFont.load_default(size=9)
    left, right, top, bottom = 60, 170, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    _title_and_grid(draw, title, ymax, (left, top, plot_w, plot_h), font, small)
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    draw.text((8, top - 22), ylabel, fill="black", font=small)

    names = list(series)
    n_groups, n_series = len(groups), max(1, len(names))
    slot = plot_w / max(1, n_groups)
    bar = slot * 0.8 / n_series
    for gi, group in enumerate(groups):
        x0 = left + gi * slot + slot * 0.1
        for si, name in enumerate(names):
            raw = float(series[name][gi])
            value = max(0.0, min(raw, ymax))
            x = x0 + si * bar
            y = top + plot_h - plot_h * value / ymax
            draw.rectangle([x, y, x + bar - 2, top + plot_h], fill=PALETTE[si % len(PALETTE)])
            e = plot_h * float(errors[name][gi]) / ymax if errors and name in errors else 0.0
            if e:
                cx = x + (bar - 2) / 2
                draw.line([(cx, y - e), (cx, y + e)], fill="black")
            if labels:
                text = f"{raw:.0f}" if bar < 28 else f"{raw:.1f}"
                tw = draw.textlength(text, font=tiny)
                draw.text((x + (bar - 2 - tw) / 2, y - e - 12), text, fill="black", font=tiny)
        label_w = draw.textlength(group, font=small)
        draw.text((left + gi * slot + (slot - label_w) / 2, top + plot_h + 8), group, fill="black", font=small)
    if line is not None:
        y = top + plot_h - plot_h * line / ymax
        for sx in range(0, int(plot_w), 12):
            draw.line([(left + sx, y), (left + min(sx + 6, plot_w), y)], fill="#C44E52", width=2)
    for si, name in enumerate(names):  # legend
        y = top + si * 20
        draw.rectangle([width - right + 15, y, width - right + 29, y + 14], fill=PALETTE[si % len(PALETTE)])
        draw.text((width - right + 35, y), name, fill="black", font=small)
    return img


def _mpl_bars(ax, *, title, groups, series, errors=None, ylabel="%", ymax=100.0, line=None, labels=True):
    import numpy as np

    names = list(series)
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(names))
    for si, name in enumerate(names):
        err = errors.get(name) if errors else None
        bars = ax.bar(x + si * width - 0.4 + width / 2, series[name], width, yerr=err, capsize=2, label=name,
                      color=PALETTE[si % len(PALETTE)])
        if labels:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    if line is not None:
        ax.axhline(line, color="#C44E52", linestyle="--", linewidth=1)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, ymax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", color="#E5E5E5")
    ax.set_axisbelow(True)


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
    line: float | None = None,
) -> Path:
    """Grouped bars: one cluster per entry of `groups`, one bar per series (values in the units of ymax),
    optional ± error whiskers, the value above each bar, an optional dashed reference line."""
    return bar_panels(path, [dict(title=title, groups=groups, series=series, errors=errors, ylabel=ylabel,
                                  ymax=ymax, line=line)], size=size)


def bar_panels(path: str | os.PathLike, panels: Sequence[dict], *, size: tuple[int, int] = (900, 420)) -> Path:
    """Several bar charts side by side in one image (e.g. higher-is-better metrics in one panel, lower-is-better
    in the other); each panel takes bar_chart's keywords."""
    if matplotlib_available():
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(panels), figsize=(size[0] / 100 * len(panels), size[1] / 100), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            _mpl_bars(ax, **panel)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _save_figure(fig, path)
    from PIL import Image

    images = [_bar_image(size=size, **panel) for panel in panels]
    out = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width
    return _save(out, path)


def line_chart(path: str | os.PathLike, *, title: str, series: dict[str, Sequence[float]], xlabel: str = "epoch",
               ylabel: str = "%", ymax: float = 100.0, size: tuple[int, int] = (900, 420)) -> Path:
    """One line per series over x = 1, 2, ... (training curves)."""
    if matplotlib_available():
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100))
        for i, (name, ys) in enumerate(series.items()):
            ax.plot(range(1, len(ys) + 1), ys, marker="o", label=name, color=PALETTE[i % len(PALETTE)])
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, ymax))
        ax.grid(color="#E5E5E5")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _save_figure(fig, path)
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    left, right, top, bottom = 60, 230, 40, 50
    pw, ph = width - left - right, height - top - bottom
    _title_and_grid(draw, title, ymax, (left, top, pw, ph), font, small)
    n = max((len(v) for v in series.values()), default=1)
    px = lambda i: left + (pw * (i / max(1, n - 1)) if n > 1 else pw / 2)  # noqa: E731
    for i in range(n):
        draw.text((px(i) - 3, top + ph + 6), str(i + 1), fill="black", font=small)
    draw.text((left + pw / 2 - 20, top + ph + 26), xlabel, fill="black", font=small)
    draw.text((8, top - 22), ylabel, fill="black", font=small)
    draw.line([(left, top), (left, top + ph), (left + pw, top + ph)], fill="black")
    for si, (name, ys) in enumerate(series.items()):
        colour = PALETTE[si % len(PALETTE)]
        points = [(px(i), top + ph - ph * max(0.0, min(float(v), ymax)) / ymax) for i, v in enumerate(ys)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + si * 20
        draw.rectangle([width - right + 15, ly, width - right + 29, ly + 14], fill=colour)
        draw.text((width - right + 35, ly), name, fill="black", font=small)
    return _save(img, path)


def histograms(path: str | os.PathLike, *, title: str, groups: dict[str, Sequence[float]], bins: int = 20,
               threshold: float | None = 0.5, size: tuple[int, int] = (900, 420)) -> Path:
    """One histogram of values in [0, 1] per group, in a row of small panels, with a dashed line at
    `threshold` (the decision threshold for scores)."""
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {g: np.histogram(np.clip(np.asarray(v, float), 0, 1), bins=edges)[0] for g, v in groups.items()}
    if matplotlib_available():
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(groups), figsize=(size[0] / 100, size[1] / 100), squeeze=False, sharey=True)
        for i, (ax, (g, c)) in enumerate(zip(axes[0], counts.items())):
            ax.bar(edges[:-1], c, width=1.0 / bins, align="edge", color=PALETTE[i % len(PALETTE)])
            if threshold is not None:
                ax.axvline(threshold, color="#C44E52", linestyle="--", linewidth=1)
            ax.set_title(g, fontsize=8)
            ax.set_xlim(0, 1)
        fig.suptitle(title, fontsize=10)
        return _save_figure(fig, path)
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=10)
    draw.text((20, 10), title, fill="black", font=font)
    top, bottom, gap = 50, 40, 16
    pw = (width - 20 - gap * len(counts)) / max(1, len(counts))
    ph = height - top - bottom
    peak = max((int(c.max()) for c in counts.values()), default=1) or 1
    for i, (g, c) in enumerate(counts.items()):
        x0 = 20 + i * (pw + gap)
        draw.text((x0, top - 16), g, fill="black", font=small)
        draw.rectangle([x0, top, x0 + pw, top + ph], outline="#BBBBBB")
        for b, n in enumerate(c):
            h = ph * n / peak
            bx = x0 + pw * b / bins
            draw.rectangle([bx, top + ph - h, bx + pw / bins - 1, top + ph], fill=PALETTE[i % len(PALETTE)])
        if threshold is not None:
            tx = x0 + pw * threshold
            for sy in range(0, int(ph), 10):
                draw.line([(tx, top + sy), (tx, top + min(sy + 5, ph))], fill="#C44E52", width=2)
        draw.text((x0, top + ph + 4), "0", fill="black", font=small)
        draw.text((x0 + pw - 6, top + ph + 4), "1", fill="black", font=small)
    return _save(img, path)


def image_grid(path: str | os.PathLike, rows: Sequence[tuple[str, Sequence[str | os.PathLike]]], *, cell: int = 72,
               label_width: int = 250) -> Path:
    """One row per (label, image files): the images scaled to `cell` pixels, the label on the left."""
    from PIL import Image, ImageDraw, ImageFont

    n = max((len(files) for _, files in rows), default=1)
    img = Image.new("RGB", (label_width + n * (cell + 4), len(rows) * (cell + 4) + 4), "white")
    draw = ImageDraw.Draw(img)
    small = ImageFont.load_default(size=12)
    for r, (label, files) in enumerate(rows):
        y = 4 + r * (cell + 4)
        draw.text((6, y + cell / 2 - 7), label, fill="black", font=small)
        for c, f in enumerate(files):
            with Image.open(f) as im:
                img.paste(im.convert("RGB").resize((cell, cell)), (label_width + c * (cell + 4), y))
    return _save(img, path)


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
    _scatter_frame(draw, box=(left, top, pw, ph), cuts=(xc, yc), region_label=region_label, small=small)
    _scatter_axis_labels(draw, box=(left, top, pw, ph), x=x, y=y, py=py, small=small,
                         xlabel=xlabel + (" (log scale)" if x_log else ""),
                         ylabel=ylabel + (" (log scale)" if y_log else ""))

    names = list(dict.fromkeys(groups))
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)}
    r = 5
    for xi, yi, g, h in zip(x, y, groups, highlighted):
        cx, cy = px(xi), py(yi)
        if h:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour[g], outline="black")
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour[g], width=2)
    _scatter_legend(draw, at=(width - right + 15, top), groups=groups, highlighted=highlighted, colour=colour,
                    small=small)
    return _save(img, path)


def _scatter_frame(draw: Any, *, box: tuple[float, float, float, float], cuts: tuple[float | None, float | None],
                   region_label: str, small: Any) -> None:
    """The plot's frame, the shaded region left of the vertical cut and above the horizontal one, and both cuts as
    dashed lines (pixel positions; None where there is no cut)."""
    left, top, pw, ph = box
    xc, yc = cuts
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


def _scatter_axis_labels(draw: Any, *, box: tuple[float, float, float, float], x: Sequence[float],
                         y: Sequence[float], py: Callable[[float], float], xlabel: str, ylabel: str, small: Any) -> None:
    """Each axis's range at its ends, and its label."""
    left, top, pw, ph = box
    for i, (lo_, hi_) in enumerate(((min(x), max(x)), (min(y), max(y)))):  # range labels at the axis ends
        fmt = "{:.3g}"
        if i == 0:
            draw.text((left, top + ph + 4), fmt.format(lo_), fill="black", font=small)
            label = fmt.format(hi_)
            draw.text((left + pw - draw.textlength(label, font=small), top + ph + 4), label, fill="black", font=small)
        else:
            draw.text((4, py(lo_) - 6), fmt.format(lo_), fill="black", font=small)
            draw.text((4, py(hi_) - 6), fmt.format(hi_), fill="black", font=small)
    draw.text((left + pw / 2 - 120, top + ph + 24), xlabel, fill="black", font=small)
    draw.text((4, top - 20), ylabel, fill="black", font=small)


def _scatter_legend(draw: Any, *, at: tuple[float, float], groups: Sequence[str], highlighted: Sequence[bool],
                    colour: dict[str, str], small: Any) -> None:
    """One line per group (its colour, highlighted of total), then the filled and hollow markers explained."""
    lx, top = at
    names = list(dict.fromkeys(groups))
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


def nice_ticks(lo: float, hi: float, *, most: int = 7) -> list[float]:
    """Round tick values inside [lo, hi]: multiples of 1, 2 or 5 times a power of ten, at most `most` of them
    (at least two, the ends, when the range is empty)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / (most - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]  # no "-0"


def _tick_text(v: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{v:.{decimals}f}"


def _frame(draw, box, xr, yr, *, xlabel, ylabel, title, font, small, xticks=None):
    """Axes over the ranges xr, yr in the box (left, top, width, height), ticks at round values (x: at `xticks`
    when given); returns the maps value -> pixel."""
    left, top, pw, ph = box
    fx = lambda v: left + pw * (v - xr[0]) / ((xr[1] - xr[0]) or 1)  # noqa: E731
    fy = lambda v: top + ph - ph * (v - yr[0]) / ((yr[1] - yr[0]) or 1)  # noqa: E731
    draw.text((left, top - 40), title, fill="black", font=font)
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    xs = list(xticks) if xticks is not None else nice_ticks(*xr)
    for vx in xs:
        draw.line([(fx(vx), top + ph), (fx(vx), top + ph + 4)], fill="black")
        draw.text((fx(vx) - 10, top + ph + 6), _tick_text(vx, xs) if xticks is None else f"{vx:g}", fill="black",
                  font=small)
    ys = nice_ticks(*yr)
    for vy in ys:
        draw.line([(left - 4, fy(vy)), (left, fy(vy))], fill="black")
        draw.text((left - 40, fy(vy) - 6), _tick_text(vy, ys), fill="black", font=small)
    draw.text((left + pw / 2 - 40, top + ph + 22), xlabel, fill="black", font=small)
    draw.text((left, top - 18), ylabel, fill="black", font=small)
    return fx, fy


def interval_ends(value: float, half: float, limits: tuple[float, float] | None) -> tuple[float, float]:
    """The ends of the interval value ± half, cut to `limits` (a percentage's interval never leaves 0..100)."""
    lo, hi = value - half, value + half
    return (lo, hi) if limits is None else (max(lo, limits[0]), min(hi, limits[1]))


def _span(values: Sequence[tuple[float, float]], limits: tuple[float, float] | None = None) -> tuple[float, float]:
    ends = [interval_ends(v, e, limits) for v, e in values]
    lo, hi = min(a for a, _ in ends), max(b for _, b in ends)
    pad = 0.08 * (hi - lo) or 1.0
    return lo - pad, hi + pad


def interval_scatter(path: str | os.PathLike, panels: Sequence[dict], *, size: tuple[int, int] = (1250, 470),
                     limits: tuple[float, float] | None = None) -> Path:
    """Side-by-side panels, each one point per name at (x, y) with interval bars in both directions (the paper's
    Fig. 1: utility against fairness). A panel: {"title", "xlabel", "ylabel", "points": {name: (x, dx, y, dy)}};
    the names share colours and numbers across panels (each point is labelled with its number) and one legend on
    the right (Pillow). Interval bars stop at `limits` (e.g. (0, 100) for percentages)."""
    from PIL import Image, ImageDraw, ImageFont

    names = list(dict.fromkeys(n for p in panels for n in p["points"]))
    width, height = size[0], max(size[1], 100 + 20 * len(names))
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    legend_w = 380
    pw = (width - legend_w - 70 * len(panels)) // len(panels)
    for k, panel in enumerate(panels):
        pts = panel["points"]
        xr = _span([(x, dx) for x, dx, _, _ in pts.values()], limits)
        yr = _span([(y, dy) for _, _, y, dy in pts.values()], limits)
        fx, fy = _frame(draw, (70 + k * (pw + 70), 70, pw, height - 130), xr, yr, xlabel=panel["xlabel"],
                        ylabel=panel["ylabel"], title=panel["title"], font=font, small=small)
        for name, (x, dx, y, dy) in pts.items():
            c = colour[name]
            (x0, x1), (y0, y1) = interval_ends(x, dx, limits), interval_ends(y, dy, limits)
            draw.line([(fx(x0), fy(y)), (fx(x1), fy(y))], fill=c, width=2)
            draw.line([(fx(x), fy(y0)), (fx(x), fy(y1))], fill=c, width=2)
            draw.ellipse([fx(x) - 5, fy(y) - 5, fx(x) + 5, fy(y) + 5], fill=c, outline="black")
            draw.text((fx(x) + 7, fy(y) - 14), str(names.index(name) + 1), fill="black", font=small)
    lx = width - legend_w + 10
    for i, n in enumerate(names):
        draw.ellipse([lx, 72 + i * 20, lx + 10, 82 + i * 20], fill=colour[n], outline="black")
        draw.text((lx + 16, 70 + i * 20), f"{i + 1} {n}", fill="black", font=small)
    return _save(img, path)


def interval_lines(path: str | os.PathLike, *, title: str, x: Sequence[float], series: dict[str, Sequence[tuple[float, float]]],
                   xlabel: str, ylabel: str = "%", size: tuple[int, int] = (900, 440),
                   limits: tuple[float, float] | None = None) -> Path:
    """One line per series over the given x, each point (mean, half-width) with its interval bar (Fig. 5 of the
    paper: metrics against k); each series on its own scale would hide nothing, so all share one axis; interval
    bars stop at `limits` (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    xr = (min(x) - 0.05 * ((max(x) - min(x)) or 1), max(x) + 0.05 * ((max(x) - min(x)) or 1))
    yr = _span([p for ps in series.values() for p in ps], limits)
    fx, fy = _frame(draw, (70, 70, width - 300, height - 130), xr, yr, xlabel=xlabel, ylabel=ylabel, title=title,
                    font=font, small=small, xticks=x)
    for i, (name, points) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        xy = [(fx(xv), fy(m)) for xv, (m, _) in zip(x, points)]
        if len(xy) > 1:
            draw.line(xy, fill=c, width=2)
        for xv, (m, e) in zip(x, points):
            lo, hi = interval_ends(m, e, limits)
            draw.line([(fx(xv), fy(lo)), (fx(xv), fy(hi))], fill=c, width=2)
            draw.ellipse([fx(xv) - 4, fy(m) - 4, fx(xv) + 4, fy(m) + 4], fill=c)
        draw.rectangle([width - 215, 72 + i * 20, width - 203, 84 + i * 20], fill=c)
        draw.text((width - 195, 70 + i * 20), name, fill="black", font=small)
    return _save(img, path)
