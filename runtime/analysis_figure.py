"""The ``cmp-face analyze`` figure: the frontal mesh coloured by its per-vertex distance to the
chosen mean mesh (lit, rendered with Sim3DR), the four measured segments drawn and labelled,
and the four percent differences as bars. Needs matplotlib (the ``plot`` extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from runtime.analysis import Analysis
from runtime.errors import CmpError
from runtime.metrics import DISTANCE_LABELS, DISTANCES

__all__ = ["write_figure"]

RENDER_SIZE = 640
#: One colour per measurement (matplotlib's tab10 blue, green, purple, brown: none is in the surface map).
SEGMENT_COLOURS = {"forehead": "#1f77b4", "cheek": "#2ca02c", "ear": "#9467bd", "midline": "#8c564b"}
SURFACE_MAP = "YlOrRd"


def require_matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise CmpError("the figure needs matplotlib, from the plot extra: pip install 'cmp-deploy[plot]'") from exc
    return matplotlib, Figure, FigureCanvasAgg


def _surface(vertices: np.ndarray, triangles: np.ndarray, values01: np.ndarray, cmap) -> tuple[np.ndarray, np.ndarray]:
    """RGB render (H, W, 3) uint8 of the frontal mesh, its colour from ``cmap(values01)`` shaded by
    the release's lighting, and the image coordinates of the vertices."""
    import Sim3DR
    from Sim3DR.lighting import light_colors

    from runtime.render import frontal_to_image

    img_v = frontal_to_image(vertices, RENDER_SIZE, margin=0.04)
    light = light_colors(img_v, triangles)[:, :1]
    # Lighting as a gentle shade (0.35 .. 1) so the colour stays readable where the light is weak.
    rgb = cmap(values01)[:, :3] * (0.35 + 0.65 * light)
    canvas = np.full((RENDER_SIZE, RENDER_SIZE, 3), 255, np.uint8)
    Sim3DR.rasterize(img_v, triangles, np.ascontiguousarray(rgb, dtype=np.float32), canvas)
    return canvas, img_v


def _segments(ax, img_v: np.ndarray, analysis: Analysis) -> None:
    """Draw the four measured segments; label each in the margin on its side of the face, with
    a leader line to the segment's middle, labels kept apart vertically so none overlap."""
    side_rows: dict[bool, list] = {False: [], True: []}
    for name, (i, j) in DISTANCES.items():
        (x0, y0), (x1, y1) = img_v[i, :2], img_v[j, :2]
        colour = SEGMENT_COLOURS[name]
        ax.plot([x0, x1], [y0, y1], "-", color="white", lw=5, solid_capstyle="round")
        ax.plot([x0, x1], [y0, y1], "o-", color=colour, lw=2.5, ms=6, mec="white", mew=1.2)
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        side_rows[mx > RENDER_SIZE / 2].append((my, mx, name))
    gap, room = RENDER_SIZE * 0.12, RENDER_SIZE * 0.25
    left, right_edge = float(img_v[:, 0].min()), float(img_v[:, 0].max())
    # Labels sit just outside the face; the axes widen only as far as they need.
    ax.set_xlim(min(0.0, left - room), max(RENDER_SIZE, right_edge + room))
    for right, rows in side_rows.items():
        last = -np.inf
        for my, mx, name in sorted(rows):
            y = max(my, last + gap)
            last = y
            colour = SEGMENT_COLOURS[name]
            pct = analysis.measurements[name]["percent"]
            x = right_edge + 0.02 * RENDER_SIZE if right else left - 0.02 * RENDER_SIZE
            ax.annotate(f"{DISTANCE_LABELS[name]}\n{pct:+.1f}%", (mx, my), xytext=(x, y), textcoords="data",
                        ha="left" if right else "right", va="center", fontsize=10, color=colour,
                        weight="bold", annotation_clip=False,
                        bbox=dict(boxstyle="round,pad=0.3", fc="white", ec=colour, lw=1.2),
                        arrowprops=dict(arrowstyle="-", color=colour, lw=1.2, shrinkA=0, shrinkB=2))


def write_figure(path: Path, vertices: np.ndarray, triangles: np.ndarray, analysis: Analysis,
                 note: Optional[str] = None) -> Path:
    """Write the PNG figure to ``path`` (all-or-nothing). ``note``: a caveat printed in red
    under the title (e.g. that the models or means are synthetic)."""
    from runtime.atomic import replacing

    matplotlib, Figure, FigureCanvasAgg = require_matplotlib()
    cmap = matplotlib.colormaps[SURFACE_MAP]
    d = analysis.vertex_distance
    top = float(np.percentile(d, 99)) or 1.0  # a few outliers should not wash out the map
    image, img_v = _surface(np.asarray(vertices, np.float32), triangles, np.clip(d / top, 0, 1), cmap)

    fig = Figure(figsize=(12, 6.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=(1.4, 1), left=0.01, right=0.97, top=0.83, bottom=0.08,
                            wspace=0.12)
    ax = fig.add_subplot(grid[0])
    ax.imshow(image, interpolation="lanczos")
    ax.set_axis_off()
    _segments(ax, img_v, analysis)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, top), cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.045, pad=0.02, aspect=40,
                       extend="max", shrink=0.8)
    bar.set_label(f"distance of each vertex to the mean {analysis.gender} mesh (mesh units)", fontsize=9)
    bar.ax.tick_params(labelsize=8)

    # Right: the four measurements against the chosen mean, then how near each mean mesh is.
    right = grid[1].subgridspec(2, 1, height_ratios=(1.3, 1), hspace=0.75)
    bars = fig.add_subplot(right[0])
    names = list(DISTANCES)[::-1]
    values = [analysis.measurements[n]["percent"] for n in names]
    bars.barh([DISTANCE_LABELS[n] for n in names], values, color=[SEGMENT_COLOURS[n] for n in names], height=0.6)
    bars.axvline(0, color="black", lw=0.8)
    span = max(1.0, max(abs(v) for v in values)) * 1.35
    bars.set_xlim(-span, span)
    for k, v in enumerate(values):
        bars.text(v + (0.02 if v >= 0 else -0.02) * span, k, f"{v:+.1f}%", va="center",
                  ha="left" if v >= 0 else "right", fontsize=10)
    bars.set_title(f"measurements vs. the mean {analysis.gender} face", fontsize=11)
    bars.set_xlabel("difference (%)")
    bars.spines[["top", "right"]].set_visible(False)

    near = fig.add_subplot(right[1])
    groups = [("gender", analysis.gender_distances, analysis.gender),
              ("face type", analysis.face_type_distances, analysis.face_type)]
    x = 0.0
    ticks, labels = [], []
    for title, distances, chosen in groups:
        start = x
        for name, value in distances.items():
            near.bar(x, value, color="#d62728" if name == chosen else "#bbbbbb", width=0.8)
            near.annotate(f"{value:.3g}", (x, value), xytext=(0, 2), textcoords="offset points", ha="center",
                          va="bottom", fontsize=8)
            ticks.append(x)
            labels.append(name)
            x += 1
        near.text((start + x - 1) / 2, -0.3, title, transform=near.get_xaxis_transform(), ha="center",
                  fontsize=10, weight="bold")
        x += 0.8
    near.set_xticks(ticks, labels, fontsize=9)
    for tick, name in zip(near.get_xticklabels(), labels):
        if name in (analysis.gender, analysis.face_type):
            tick.set_color("#d62728")
            tick.set_fontweight("bold")
    near.set_ylim(0, near.get_ylim()[1] * 1.12)
    near.set_title("distance to each mean mesh, ||pred - mean|| / N (red: nearest)", fontsize=10)
    near.spines[["top", "right"]].set_visible(False)

    fig.suptitle(f"{analysis.gender} voice  ·  {analysis.face_type} face", fontsize=17, weight="bold", y=0.975)
    if note:
        fig.text(0.5, 0.9, note, ha="center", fontsize=10, color="#b00000")
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
