"""Reportlets of one corrected DWI run: matplotlib figures, an animated GIF, an HTML summary.

Pure plotting code (NumPy, matplotlib, Pillow); no Nipype. Every function writes
one file and returns its path.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("dmriprep_motion")

#: Colours of the b0 "shell" and of the diffusion-weighted shells (colour-blind safe).
SHELL_COLORS = ["#7f7f7f", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"]
AXIS_COLORS = {"x": "#d62728", "y": "#2ca02c", "z": "#1f77b4"}
OUTLIER_COLOR = "#c00000"
#: Height (px) of the caption band above the panels of every frame of :func:`volumes_gif`.
GIF_HEADER = 42
#: The animation's palette: GIF_GRAYS gray levels, then white, yellow and red for the captions.
GIF_GRAYS = 128
GIF_WHITE, GIF_YELLOW, GIF_RED = GIF_GRAYS, GIF_GRAYS + 1, GIF_GRAYS + 2
_GIF_PALETTE = [
    *(c for g in range(GIF_GRAYS) for c in (round(g * 255 / (GIF_GRAYS - 1)),) * 3),
    *(255, 255, 255, 255, 220, 0, 255, 80, 80),
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "dmriprep_motion"})
    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=out.suffix[1:], metadata={"Date": None} if out.suffix == ".svg" else None)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def shell_color(label: int) -> str:
    """Colour of shell ``label`` (0 = b0)."""
    return SHELL_COLORS[int(label) % len(SHELL_COLORS)]


def _shell_names(bvals: np.ndarray, labels: np.ndarray) -> dict[int, str]:
    names = {}
    for label in np.unique(labels):
        values = bvals[labels == label]
        names[int(label)] = "b0" if label == 0 else f"b={np.round(np.median(values), -1):g}"
    return names


def _shade_shells(ax, labels: np.ndarray) -> None:
    for idx, label in enumerate(labels):
        ax.axvspan(idx - 0.5, idx + 0.5, color=shell_color(label), alpha=0.12, lw=0)


def _mark_outliers(ax, flags: np.ndarray) -> None:
    for idx in np.flatnonzero(flags):
        ax.axvline(idx, color=OUTLIER_COLOR, lw=1.2, ls="--", alpha=0.8)


def plot_motion(
    conf: dict[str, np.ndarray],
    labels: np.ndarray,
    flags: np.ndarray,
    out: str | Path,
    title: str | None = None,
) -> Path:
    """Translations (mm), rotations (degrees), FD and (affine) scales/shears per volume.

    Parameters
    ----------
    conf : dict
        Confounds columns (``trans_*``, ``rot_*`` in radians, ``framewise_displacement``,
        ``bval``; optional ``scale_*``/``shear_*``).
    labels : (N,) int array
        Shell of every volume (0 = b0), shaded in the background.
    flags : (N,) bool array
        Outlier volumes, marked with dashed red lines.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    affine = [c for c in conf if c.startswith(("scale_", "shear_"))]
    n_rows = 4 if affine else 3
    fig, axes = plt.subplots(
        n_rows, 1, figsize=(9, 1.9 * n_rows + 0.6), sharex=True, gridspec_kw={"hspace": 0.12}
    )
    vols = np.arange(conf["trans_x"].size)
    for axis in "xyz":
        axes[0].plot(vols, conf[f"trans_{axis}"], marker=".", color=AXIS_COLORS[axis], label=axis)
        axes[1].plot(vols, np.degrees(conf[f"rot_{axis}"]), marker=".", color=AXIS_COLORS[axis], label=axis)
    fd = conf["framewise_displacement"]
    axes[2].bar(vols, np.nan_to_num(fd), color="#444444", width=0.6)
    axes[0].set_ylabel("translation (mm)")
    axes[1].set_ylabel("rotation (deg)")
    axes[2].set_ylabel("FD (mm)")
    if affine:
        for col in affine:
            ref = 1.0 if col.startswith("scale_") else 0.0
            axes[3].plot(vols, conf[col] - ref, marker=".", label=col)
        axes[3].set_ylabel("affine − identity")
        axes[3].legend(ncol=6, fontsize="x-small", loc="upper right")
    bvals = np.asarray(conf["bval"])
    names = _shell_names(bvals, labels)
    for ax in axes:
        _shade_shells(ax, labels)
        _mark_outliers(ax, flags)
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(axis="y", lw=0.3, alpha=0.6)
    axes[-1].set_xlabel("volume")
    axes[-1].set_xlim(-0.5, vols.size - 0.5)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [Patch(color=shell_color(k), alpha=0.3, label=v) for k, v in names.items()]
    if flags.any():
        handles.append(plt.Line2D([], [], color=OUTLIER_COLOR, ls="--", label="outlier"))
    axes[0].legend(handles=handles, ncol=len(handles), fontsize="small", loc="lower left",
                   bbox_to_anchor=(0, 1.02), frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, y=0.995, fontsize=10)
    return _save(fig, out)


def plot_gradients(
    bvals: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
) -> Path:
    """Gradient directions on the unit sphere, coloured by shell, before and after rotation.

    Parameters
    ----------
    bvals : (N,) array
    before, after : (N, 3) arrays
        Unit b-vectors (RAS+) before and after rotation; b0 rows (zero) are not drawn.
    labels : (N,) int array
        Shell labels (0 = b0).
    """
    plt = _pyplot()
    fig = plt.figure(figsize=(9, 4.6))
    names = _shell_names(np.asarray(bvals), labels)
    weighted = labels > 0
    u, v = np.mgrid[0 : 2 * np.pi : 25j, 0 : np.pi : 13j]
    for col, (vecs, title) in enumerate(((before, "original b-vectors"), (after, "rotated b-vectors"))):
        ax = fig.add_subplot(1, 2, col + 1, projection="3d")
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v),
                          color="#cccccc", lw=0.3)  # fmt: skip
        for label in np.unique(labels[weighted]):
            sel = labels == label
            pts = np.asarray(vecs)[sel]
            for sign, marker in ((1, "o"), (-1, "o")):
                ax.scatter(*(sign * pts.T), color=shell_color(label), s=28 if sign > 0 else 10,
                           marker=marker, alpha=1.0 if sign > 0 else 0.35, depthshade=False,
                           label=f"{names[int(label)]} ({sel.sum()})" if sign > 0 else None)  # fmt: skip
        if col == 1:
            # Show the rotation of every vector as a short segment from its original position.
            for b0, b1 in zip(np.asarray(before)[weighted], np.asarray(after)[weighted], strict=True):
                ax.plot(*np.stack([b0, b1]).T, color="k", lw=0.8)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_xlabel("R"), ax.set_ylabel("A"), ax.set_zlabel("S")
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_title(title)
        ax.view_init(elev=25, azim=-60)
    fig.axes[0].legend(loc="lower left", fontsize="small", frameon=False)
    angles = _rotation_angles(before[weighted], after[weighted])
    if angles.size:
        fig.text(0.5, 0.02, f"rotation of the b-vectors: mean {angles.mean():.2f}°, max {angles.max():.2f}° "
                 "(antipodal directions shown faded)", ha="center")  # fmt: skip
    fig.subplots_adjust(left=0.0, right=1.0, top=0.92, bottom=0.06, wspace=0.0)
    return _save(fig, out)


def _rotation_angles(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Angles (degrees) between corresponding unit vectors, sign-agnostic."""
    if len(before) == 0:
        return np.array([])
    cos = np.abs(np.sum(np.asarray(before) * np.asarray(after), axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def plot_convergence(changes: list[list[float]], out: str | Path) -> Path:
    """Change of every volume's transform from the previous pass, per pass.

    Parameters
    ----------
    changes : list of lists
        ``changes[p][i]`` is the mean displacement (mm, inside the brain mask)
        between the transforms of volume ``i`` after pass ``p`` and before it
        (pass 1 compares with the starting transforms).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    passes = np.arange(1, len(changes) + 1)
    rng = np.random.default_rng(0)
    maxima, medians = [], []
    for p, values in zip(passes, changes, strict=True):
        values = np.asarray(values, dtype=float)
        # Exactly zero: volumes never registered in a pass (the reference b0); not drawn on a log axis.
        values = values[values > 0] if (values > 0).any() else np.full(1, 1e-6)
        jitter = rng.uniform(-0.12, 0.12, values.size)
        ax.scatter(p + jitter, values, s=12, color="#0072b2", alpha=0.6, lw=0)
        maxima.append(values.max())
        medians.append(np.median(values))
    ax.plot(passes, maxima, color=OUTLIER_COLOR, marker="o", label="max over volumes")
    ax.plot(passes, medians, color="k", marker="s", ls=":", label="median")
    for p, value in zip(passes, maxima, strict=True):
        ax.annotate(f"{value:.3g} mm", (p, value), textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(passes)
    ax.set_xlim(0.5, len(passes) + 0.5)
    ax.set_xlabel("pass")
    ax.set_ylabel("change of transform (mm)")
    ax.grid(lw=0.3, alpha=0.6)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def plot_similarity(
    similarity: np.ndarray,
    thresholds: np.ndarray,
    labels: np.ndarray,
    bvals: np.ndarray,
    flags: np.ndarray,
    out: str | Path,
) -> Path:
    """Per-volume similarity to the registration target, outliers flagged."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 3.2))
    vols = np.arange(np.asarray(similarity).size)
    colors = [OUTLIER_COLOR if f else shell_color(lab) for f, lab in zip(flags, labels, strict=True)]
    ax.bar(vols, similarity, color=colors, width=0.7)
    for label in np.unique(labels):
        sel = np.flatnonzero(labels == label)
        if np.isfinite(thresholds[sel]).any():
            ax.hlines(thresholds[sel], sel - 0.45, sel + 0.45, color="k", ls="--", lw=1)
    for idx in np.flatnonzero(flags):
        ax.annotate("outlier", (idx, similarity[idx]), textcoords="offset points", xytext=(0, 3),
                    ha="center", color=OUTLIER_COLOR, fontsize=7)  # fmt: skip
    finite = np.asarray(similarity)[np.isfinite(similarity)]
    low = min(
        finite.min() if finite.size else 0.0, np.nanmin(thresholds) if np.isfinite(thresholds).any() else 1.0
    )
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xlim(-0.5, vols.size - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("volume")
    ax.set_ylabel("correlation with target")
    names = _shell_names(np.asarray(bvals), labels)
    handles = [Patch(color=shell_color(k), label=v) for k, v in names.items()]
    handles += [plt.Line2D([], [], color="k", ls="--", label="outlier threshold"),
                Patch(color=OUTLIER_COLOR, label=f"outlier ({int(np.sum(flags))})")]  # fmt: skip
    ax.legend(handles=handles, ncol=len(handles), fontsize="small", loc="lower left",
              bbox_to_anchor=(0, 1.0), frameon=False)  # fmt: skip
    ax.grid(axis="y", lw=0.3, alpha=0.6)
    fig.tight_layout()
    return _save(fig, out)


# ------------------------------------------------------------------------- flicker
def _cuts(mask: np.ndarray, n_cuts: int) -> list[np.ndarray]:
    """Slice indices along each axis, evenly spread inside the mask's bounding box."""
    coords = np.argwhere(mask) if mask.any() else np.argwhere(np.ones(mask.shape, dtype=bool))
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    margin = (hi - lo) * 0.1
    return [np.unique(np.linspace(lo[a] + margin[a], hi[a] - margin[a], n_cuts).round().astype(int))
            for a in range(3)]  # fmt: skip


def _mosaic_svg(
    data: np.ndarray,
    mask: np.ndarray,
    cuts: list[np.ndarray],
    window: tuple[float, float],
    label: str,
    zooms: tuple[float, float, float],
) -> str:
    """One mosaic (sagittal, coronal, axial rows) as an SVG string with rasterised slices."""
    plt = _pyplot()
    from io import StringIO

    n_cols = max(len(c) for c in cuts)
    # Physical extent (mm) of the brain's bounding box, to size rows without empty bands.
    coords = np.argwhere(mask) if mask.any() else np.argwhere(np.ones(mask.shape, dtype=bool))
    extent = (coords.max(axis=0) - coords.min(axis=0) + 1) * np.asarray(zooms) * 1.15
    heights = [extent[2], extent[2], extent[1]]  # sagittal, coronal, axial rows
    col_width = max(extent[1], extent[0])
    width = 10.0
    height = width * sum(heights) / (n_cols * col_width)
    fig, axes = plt.subplots(
        3, n_cols, figsize=(width, height), facecolor="black", gridspec_kw={"height_ratios": heights}
    )
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.01, hspace=0.01)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    pad = ((hi - lo) * 0.08).astype(int) + 1
    lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, np.asarray(mask.shape) - 1)
    data = data[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    mask = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    cuts = [np.clip(c - lo[a], 0, data.shape[a] - 1) for a, c in enumerate(cuts)]
    views = (
        (0, lambda i: (data[i, :, :], mask[i, :, :]), zooms[2] / zooms[1]),
        (1, lambda j: (data[:, j, :], mask[:, j, :]), zooms[2] / zooms[0]),
        (2, lambda k: (data[:, :, k], mask[:, :, k]), zooms[1] / zooms[0]),
    )
    for row, (axis, take, aspect) in enumerate(views):
        for col in range(n_cols):
            ax = axes[row, col]
            ax.set_facecolor("black")
            ax.set_axis_off()
            if col >= len(cuts[axis]):
                continue
            img, msk = take(cuts[axis][col])
            ax.imshow(np.rot90(img), cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
                      interpolation="nearest", rasterized=True)  # fmt: skip
            if msk.any():
                ax.contour(np.rot90(msk.astype(float)), levels=[0.5], colors="#ff3030", linewidths=0.8)
    fig.text(0.005, 0.995, label, color="#ffd000", fontsize=12, va="top", ha="left", weight="bold")
    buf = StringIO()
    fig.savefig(buf, format="svg", dpi=110, facecolor="black", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def plot_flicker(
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray,
    out: str | Path,
    labels: tuple[str, str] = ("before", "after"),
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0),
    n_cuts: int = 6,
) -> Path:
    """Before/after mosaic flickering on mouse hover, composed with nireports' ``compose_view``.

    Parameters
    ----------
    before, after : (X, Y, Z) arrays
        Images on the same grid (voxel axes close to RAS+).
    mask : (X, Y, Z) bool array
        Brain mask, drawn as a contour on both and used to choose the slices.
    labels : tuple of str
        Names printed on the two images.
    """
    from nireports._vendored.svgutils.transform import fromstring
    from nireports.reportlets.utils import compose_view

    cuts = _cuts(mask, n_cuts)
    window = _window([before, after], mask)
    svgs = [fromstring(_mosaic_svg(img, mask, cuts, window, label, zooms))
            for img, label in ((after, labels[1]), (before, labels[0]))]  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The background is the "after" image; hovering fades the "before" foreground in and out.
    compose_view([svgs[0]], [svgs[1]], out_file=out)
    return out


# ----------------------------------------------------------------------- animation
def _window(volumes: list[np.ndarray], mask: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([v[mask] for v in volumes]) if mask.any() else np.concatenate(volumes).ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _views(vol: np.ndarray, center: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial and coronal slices through ``center``, displayed with anterior/superior up."""
    i, j, k = center
    return [np.rot90(vol[:, :, k]), np.rot90(vol[:, j, :])]


def volumes_gif(
    original: np.ndarray,
    predictions: dict[int, np.ndarray],
    corrected: np.ndarray,
    mask: np.ndarray,
    bvals: np.ndarray,
    flags: np.ndarray,
    out: str | Path,
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0),
    scale: int = 3,
    duration_ms: int = 600,
) -> Path:
    """Animated GIF, one frame per volume: original | registration target | corrected.

    Parameters
    ----------
    original, corrected : (X, Y, Z, N) arrays
        The series before and after correction (same grid, voxel axes close to RAS).
    predictions : dict
        Registration target of each volume (model prediction; b0 reference for b0s),
        keyed by volume index; volumes without a target show a blank panel.
    mask : (X, Y, Z) bool array
        Brain mask (intensity window and slice centre).
    bvals, flags : (N,) arrays
        b-values (frame captions) and outlier flags (captions in red).
    zooms : tuple
        Voxel sizes, so that slices keep their physical aspect ratio.
    """
    from PIL import Image, ImageDraw, ImageFont

    n = original.shape[3]
    if mask.any():
        center = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    else:
        center = tuple(s // 2 for s in original.shape[:3])
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    titles = ["original", "target (prediction)", "corrected"]
    frames = []
    for idx in range(n):
        target = predictions.get(idx)
        vols = [original[..., idx], target if target is not None else np.zeros(original.shape[:3]),
                corrected[..., idx]]  # fmt: skip
        lo, hi = _window([original[..., idx], corrected[..., idx]], mask)
        rows = []
        for row in range(2):
            panels = [_to_uint8(_views(v, center)[row], lo, hi) for v in vols]
            rows.append(np.concatenate([_resize(p, row, zooms, scale) for p in panels], axis=1))
        width = max(r.shape[1] for r in rows)
        body = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows], axis=0)
        # Palette images from the start: gray v is entry round(v × 127 / 255); the captions are
        # drawn with the palette's own colours.  (An adaptive palette per frame, computed from
        # an RGB canvas, took 18 ms a frame, half the animation's time.)
        levels = ((body.astype(np.uint16) * (GIF_GRAYS - 1) + 127) // 255).astype(np.uint8)
        indices = np.ascontiguousarray(np.pad(levels, ((GIF_HEADER, 0), (0, 0))))
        canvas = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
        canvas.putpalette(_GIF_PALETTE)
        draw = ImageDraw.Draw(canvas)
        panel_w = body.shape[1] // 3
        for col, title in enumerate(titles):
            draw.text((col * panel_w + 6, 4), title, fill=GIF_WHITE, font=font)
        caption = f"volume {idx}  b={bvals[idx]:g}" + ("  OUTLIER" if flags[idx] else "")
        draw.text((6, 22), caption, fill=GIF_RED if flags[idx] else GIF_YELLOW, font=font)
        frames.append(canvas)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0, optimize=False)
    return out


def _resize(panel: np.ndarray, row: int, zooms: tuple[float, float, float], scale: int) -> np.ndarray:
    from PIL import Image

    # Rows of the axial view run along y, columns along x; coronal: rows along z, columns along x.
    pix_h = zooms[1] if row == 0 else zooms[2]
    pix_w = zooms[0]
    base = min(zooms)
    size = (
        int(round(panel.shape[1] * scale * pix_w / base)),
        int(round(panel.shape[0] * scale * pix_h / base)),
    )
    return np.asarray(Image.fromarray(panel).resize(size, Image.Resampling.NEAREST))


# -------------------------------------------------------------------------- summary
def summary_html(rows: dict[str, str], warnings: list[str] | None = None) -> str:
    """An HTML table (already-escaped values allowed: only keys are escaped)."""
    body = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows.items())
    notes = "".join(f'<p class="alert alert-warning">{w}</p>' for w in warnings or [])
    table = f'<table class="table table-sm summary-table">\n{body}\n</table>'
    return f'<div class="run-summary">{notes}{table}</div>\n'
