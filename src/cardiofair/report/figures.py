"""The report's figures, drawn with matplotlib's Agg renderer and returned as PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no global
figure state and no display backend, so a report renders the same on a headless server, in a
thread, or next to an interactive session.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cardiofair.data.preview import LABEL_COLOURS, mask_overlay, preview_picture
from cardiofair.data.records import FRAMES, LABELS, ImageSet, Record
from cardiofair.downstream.arms import ARMS
from cardiofair.prompts import BMI_CLASSES, UNKNOWN

DPI = 110
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "true_positive_rate": "true positive rate (sensitivity)"}


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes; no software tag, so the same figure gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _mask_legend(figure: Figure) -> None:
    handles = [Patch(facecolor=LABEL_COLOURS[label] / 255.0, label=LABELS[label]) for label in (1, 2, 3)]
    figure.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, title="mask overlay")


# --- cohort -------------------------------------------------------------------------------------


def prevalence_heatmaps(panels: Sequence[tuple[str, pd.DataFrame]], positive: str) -> bytes:
    """One heatmap per panel (title, :func:`cardiofair.report.tables.prevalence_grid` table):
    colour the ``positive`` prevalence of each sex x age cell, text its percentage and counts.
    The panels share rows, columns and colour scale, so before and after read side by side."""
    sexes = sorted(set().union(*(set(t["sex"]) for _, t in panels)))
    ages = sorted(set().union(*(set(t["age"]) for _, t in panels)), key=lambda a: (a == UNKNOWN, a))
    highest = max([t["prevalence"].max() for _, t in panels if len(t)] + [1.0])
    figure = Figure(figsize=(1.2 + 1.35 * len(ages) * len(panels), 1.4 + 0.95 * len(sexes)), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for n, (ax, (title, table)) in enumerate(zip(axes, panels)):
        indexed = table.set_index(["sex", "age"])
        values = np.full((len(sexes), len(ages)), np.nan)
        for i, sex in enumerate(sexes):
            for j, age in enumerate(ages):
                if (sex, age) not in indexed.index:
                    ax.text(j, i, "no records", ha="center", va="center", fontsize=8, color="0.4")
                    continue
                row = indexed.loc[(sex, age)]
                values[i, j] = row["prevalence"]
                dark = row["prevalence"] > 0.6 * highest
                added = f"\n(+{int(row['synthetic'])} synthetic)" if row.get("synthetic", 0) else ""
                ax.text(j, i, f"{row['prevalence']:.1f}%\n{int(row['positives'])} / {int(row['n'])}{added}",
                        ha="center", va="center", fontsize=9, color="black" if dark else "white")
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=highest, aspect="auto")
        ax.set_xticks(range(len(ages)), ages)
        ax.set_yticks(range(len(sexes)), sexes)
        ax.set_xlabel("age (decade)")
        if n == 0:
            ax.set_ylabel("sex")
        ax.set_title(title, fontsize=10)
    colourbar = figure.colorbar(image, ax=list(axes), fraction=0.04, pad=0.02)
    colourbar.set_label(f"{positive} prevalence (% of records)")
    figure.suptitle(f"{positive.capitalize()} prevalence per sex x age cell (text: %, {positive} / records)",
                    fontsize=11)
    return png(figure)


# --- images -------------------------------------------------------------------------------------


def example_grid(cells: Sequence[tuple[str, ImageSet, ImageSet]], per_side: int) -> bytes:
    """Rows of subgroup cells, each with up to ``per_side`` real and ``per_side`` synthetic
    records (ED | ES, the mask tinted below); a cell with fewer records leaves its places empty."""
    columns = 2 * per_side
    figure = Figure(figsize=(1.55 * columns + 1.0, 1.55 * len(cells) + 1.1), layout="constrained")
    axes = figure.subplots(len(cells), columns, squeeze=False)
    for i, (label, real, synthetic) in enumerate(cells):
        for j in range(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            kind, pool, k = ("real", real, j) if j < per_side else ("synthetic", synthetic, j - per_side)
            if k < len(pool):
                ax.imshow(preview_picture(pool.images[k], pool.masks[k]), interpolation="nearest")
                for side in ax.spines.values():
                    side.set_color("#1f77b4" if kind == "real" else "#d62728")
                    side.set_linewidth(2)
            else:
                ax.text(0.5, 0.5, f"no {kind}\nrecord", ha="center", va="center", fontsize=8, color="0.4",
                        transform=ax.transAxes)
                ax.set_frame_on(False)
            if i == 0:
                ax.set_title(f"{kind} {k + 1}", fontsize=9, color="#1f77b4" if kind == "real" else "#d62728")
        axes[i, 0].set_ylabel(label.replace("|", "\n"), fontsize=9, rotation=0, ha="right", va="center")
    figure.suptitle("Real training (blue frame) and synthetic (red frame) records per cell: "
                    "ED | ES on top, with the mask below", fontsize=11)
    _mask_legend(figure)
    return png(figure)


def counterfactual_grid(source: Record, images: np.ndarray, titles: Sequence[str]) -> bytes:
    """The real record whose mask was used (mask tinted), then one drawn pair per prompt:
    ED in the top row, ES in the bottom row."""
    columns = 1 + len(images)
    figure = Figure(figsize=(1.7 * columns, 4.6), layout="constrained")
    axes = figure.subplots(len(FRAMES), columns, squeeze=False)
    for f, frame in enumerate(FRAMES):
        pictures = [mask_overlay(source.image[f], source.mask[f])]
        pictures += [mask_overlay(pair[f], np.zeros_like(source.mask[f])) for pair in images]
        for j, picture in enumerate(pictures):
            ax = axes[f, j]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_title("real record\n(its mask, tinted)" if j == 0 else titles[j - 1], fontsize=9)
        axes[f, 0].set_ylabel(frame, fontsize=10)
    figure.suptitle("One real training mask drawn under different prompts (same seed for every image)", fontsize=11)
    _mask_legend(figure)
    return png(figure)


# --- fairness -----------------------------------------------------------------------------------


def arm_colour(arm: str, dose: float = 1.0) -> tuple[float, float, float]:
    """An arm's colour (RGB in [0, 1]), the same in every figure; at a dose its colour lighter
    below the planned dose and darker above it, so that each arm and dose has its own."""
    colour = np.array([int(ARMS[arm].colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5)])
    if dose < 1.0:
        colour = 1.0 - (1.0 - colour) * (0.3 + 0.7 * dose)
    elif dose > 1.0:
        colour = colour * max(0.4, 1.0 - 0.3 * (dose - 1.0))
    return tuple(float(c) for c in colour)


def group_bars(series: Sequence[tuple[str, pd.DataFrame]], metric: str, interval: str) -> bytes:
    """Grouped bars of one per-group metric: a panel per attribute (title, the table of
    :func:`cardiofair.report.tables.group_series`), a bar per arm, error bars from ``low`` to
    ``high``; an undefined value (e.g. no positives in the group) is marked instead of a bar."""
    name = METRIC_NAMES.get(metric, metric.replace("_", " "))
    figure = Figure(figsize=(11.0, 2.9 * len(series) + 0.9), layout="constrained")
    axes = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    arms: list[str] = []
    for ax, (attribute, table) in zip(axes, series):
        arms = list(dict.fromkeys(table["arm"]))
        groups = sorted(dict.fromkeys(table["group"]), key=_group_order)
        width = 0.8 / max(len(arms), 1)
        for a, arm in enumerate(arms):
            rows = table[table["arm"] == arm].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + (a - (len(arms) - 1) / 2) * width
            means = pd.to_numeric(rows["mean"], errors="coerce").to_numpy(dtype=float)
            low = pd.to_numeric(rows["low"], errors="coerce").to_numpy(dtype=float)
            high = pd.to_numeric(rows["high"], errors="coerce").to_numpy(dtype=float)
            errors = np.vstack([means - low, high - means])
            errors[~np.isfinite(errors)] = 0.0
            ax.bar(x, np.nan_to_num(means), width, yerr=np.clip(errors, 0.0, None), capsize=2,
                   color=arm_colour(arm), label=arm, error_kw={"elinewidth": 1})
            for xi, value in zip(x, means):
                if not np.isfinite(value):
                    ax.text(xi, 0.03, "undefined", rotation=90, ha="center", va="bottom", fontsize=7, color="0.3")
        first = table.drop_duplicates("group").set_index("group").reindex(groups)
        labels = [f"{g.replace('|', ' ')}\n(n={_count(c)}, {_count(p)} pos.)"
                  for g, c, p in zip(groups, first["count"], first["positives"])]
        ax.set_xticks(range(len(groups)), labels, fontsize=8)
        ax.set_ylim(0.0, 1.08)
        ax.set_ylabel(name)
        ax.set_title(f"by {attribute.replace('&', ' x ')}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles = [Patch(facecolor=arm_colour(arm), label=arm) for arm in arms]
    figure.legend(handles=handles, ncol=len(arms), loc="outside lower center", frameon=False, title="arm")
    figure.suptitle(f"{name.capitalize()} per test group and arm; error bars: {interval}", fontsize=11)
    return png(figure)


def dose_response(series: pd.DataFrame, measure: str) -> bytes:
    """Change of the main gap against dose (multiples of the planned counts) for each dosed arm
    (the table of :func:`cardiofair.report.tables.dose_series`), with its interval over seeds."""
    figure = Figure(figsize=(6.4, 3.9), layout="constrained")
    ax = figure.subplots()
    for a, (arm, rows) in enumerate(series.groupby("arm", sort=False)):
        offset = (a - (series["arm"].nunique() - 1) / 2) * 0.04
        errors = np.vstack([rows["difference"] - rows["low"], rows["high"] - rows["difference"]])
        ax.errorbar(rows["dose"] + offset, rows["difference"], yerr=np.clip(np.nan_to_num(errors), 0.0, None),
                    marker="o", capsize=3, color=arm_colour(arm), label=arm)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_xticks(sorted(series["dose"].unique()))
    ax.set_xlabel("dose (multiple of the planned records per cell; 0 = real only)")
    ax.set_ylabel(f"change of {measure} vs real")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    figure.suptitle("Dose-response: gap change against dose, 95% t-interval over seeds", fontsize=11)
    return png(figure)


def _group_order(group: str) -> tuple:
    # WHO order for BMI classes (not alphabetical), and "unknown" last, within each part of an
    # intersection such as "Female|normal".
    return tuple((part == UNKNOWN, BMI_CLASSES.index(part) if part in BMI_CLASSES else -1, part)
                 for part in group.split("|"))


def _count(value: float | None) -> str:
    return "?" if value is None or not np.isfinite(value) else str(int(round(value)))


# --- masks --------------------------------------------------------------------------------------


def mask_geometry_histograms(per_mask: pd.DataFrame, cells: Sequence[str], measures: Sequence[str]) -> bytes:
    """One row per cell, one column per geometry measure: histograms of the synthetic masks beside
    real held-out masks of the cell and, where drawn, fresh phantom subjects of the cell."""
    figure = Figure(figsize=(3.0 * len(measures), 2.2 * len(cells)), layout="constrained")
    axes = figure.subplots(len(cells), len(measures), squeeze=False)
    for row, cell in enumerate(cells):
        own = per_mask[per_mask["cell"] == cell]
        for column, measure in enumerate(measures):
            ax = axes[row, column]
            values = own[measure].dropna()
            bins = np.linspace(values.min(), values.max(), 16) if len(values) and values.max() > values.min() else 10
            for source, part in own.groupby("source"):
                ax.hist(part[measure], bins=bins, density=True, histtype="step", linewidth=1.4,
                        label=f"{source} ({len(part)})")
            if row == 0:
                ax.set_title(measure.replace("_", " "), fontsize=9)
            if column == 0:
                ax.set_ylabel(cell.replace("|", "\n"), fontsize=8, rotation=0, ha="right", va="center")
            ax.set_yticks([])
            ax.legend(fontsize=6, frameon=False)
    return png(figure)
