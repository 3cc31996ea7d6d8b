"""The quality metrics, one object each: how its section of ``synthetic_quality.json`` is
computed, how it is shown (the report's table, the printed summary) and when it makes the
report warn. ``METRICS`` lists them in the order they are computed and written.

Adding a metric is one :class:`Metric` here and its test: `cardiofair quality` computes and writes
its section (and its per-cell table with ``by_cell``), the printed summary and the report show it,
and its verdict rule reaches the top of the report. Every section puts the synthetic figure beside
its real reference (``synthetic`` and ``real_reference``), because a figure without its reference
cannot be read.

No torch here: the report and the printed summaries read these objects, so each metric names its
compute function (``"module:function"``) instead of importing it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cardiofair.data.records import LABELS, STRUCTURES
from cardiofair.formatting import MISSING, Table, number, percent

Section = Mapping[str, Any]

# Dice keys of synthetic_quality.json (``ED_LV``) spelled out with the project's label names.
STRUCTURE_NAMES = {short: LABELS[label] for label, short in STRUCTURES.items()}
# A distance this many times its real reference, or a Dice below this share of it, is far from
# real: at the default study's 4x the images are told apart from real ones at a glance.
FAR_DISTANCE_RATIO = 3.0
FAR_DICE_SHARE = 0.8
# A two-sample classifier this sure (AUROC), with its interval clear of the real reference's,
# tells nearly every synthetic image from a real one.
FAR_AUROC = 0.9


@dataclass
class Measurement:
    """What a metric's compute function returns: its section of ``synthetic_quality.json``, its
    columns of the per-image table (one value per synthetic record) and the files it writes
    beside them (name: content)."""

    section: dict[str, Any]
    per_image: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """A section of the report's page; metrics that share one are shown together."""

    anchor: str
    title: str


def _no_verdict(section: Section) -> list[str]:
    return []


@dataclass(frozen=True)
class Metric:
    """One quality metric: ``name`` is its section's key in ``synthetic_quality.json``."""

    name: str
    # "module:function" taking the evaluation's shared inputs
    # (:class:`cardiofair.metrics.quality.QualityContext`) and returning a Measurement.
    compute: str
    # Its section -> the table the report shows (and the model card, with ``in_cards``).
    table: Callable[[Section], Table]
    # Its section -> the lines of the printed summary (measure, synthetic, real reference).
    summary: Callable[[Section], list[str]]
    # Its section -> sentences for the top of the report when the figure is far from real.
    verdict: Callable[[Section], list[str]] = _no_verdict
    # Where the report shows its table; None: in a section of the report's own (the masks with
    # their histograms).
    page: Page | None = None
    # Its section has "cells": {cell: scope}, written as <name>_by_cell.csv.
    by_cell: bool = False
    in_cards: bool = False

    def measure(self, context: Any) -> Measurement:
        """Compute the metric's section from the evaluation's shared inputs."""
        module, _, function = self.compute.partition(":")
        return getattr(importlib.import_module(module), function)(context)


# --- shared pieces of the tables ----------------------------------------------------------------


def synthetic_and_reference(scope: Mapping[str, Any], key: str, inner: str | None = None) -> tuple[Any, Any]:
    """A measure's ``synthetic`` figure and its ``real_reference`` in a quality scope (None where missing)."""
    value = scope.get(key) or {}
    if inner is not None:
        value = value.get(inner) or {}
    return value.get("synthetic"), value.get("real_reference")


def structure_name(key: str) -> str:
    """``ED_MYO`` -> ``ED LV myocardium``."""
    frame, _, structure = key.partition("_")
    return f"{frame} {STRUCTURE_NAMES.get(structure, structure)}"


def summary_line(label: str, synthetic: str, reference: str) -> str:
    """One row of the printed summary: the measure, its synthetic figure and its real reference."""
    return f"{label:42s} {synthetic:>10s} {reference:>10s}"


# --- realism ------------------------------------------------------------------------------------


def left_out_cells(scope: Mapping[str, Any]) -> list[str]:
    """The note naming the synthetic cells without real held-out images, if any."""
    cells = scope.get("cells_without_real_held_out")
    return ["Cells without real held-out images (left out of the overall figure): " + ", ".join(cells)] if cells else []


def realism_table(section: Section) -> Table:
    """Distances to the real training set: synthetic beside real held-out at the same size."""
    scope = section["overall"]
    caption = ("Realism: distance of each set to the real training set in the evaluator's feature space "
               f"({section.get('feature_space', 'feature space not recorded')}). Lower is closer.")
    header = ["measure", "synthetic vs real train", "reference: real held-out (val + test) vs real train"]
    if scope.get("status") != "ok":
        return Table(caption, header, [], [f"Not measured: {scope.get('status')}"])
    n = scope.get("n_compared")

    def spread(key: str, scale: float = 1.0) -> list[str]:
        return [number(v, scale=scale) if s is None else f"{number(v, scale=scale)} +/- {number(s, scale=scale)}"
                for v, s in zip(synthetic_and_reference(scope, key), synthetic_and_reference(scope, f"{key}_std"))]

    draws = f"mean +/- s.d. over {scope['fd_draws']} draws of the compared images" if scope.get("fd_draws") else ""
    rows = [
        [f"FD-cardiofair (n={n} per set{', ' + draws if draws else ''})", *spread("fd")],
        ["FD-cardiofair, image + mask geometry", *spread("fd_image_mask")],
        ["KD-cardiofair x 1000 (+/- s.d. over subsets)", *spread("kd", 1000.0)],
        ["MS-SSIM within the set (lower = more diverse)", *map(number, synthetic_and_reference(scope, "ms_ssim"))],
    ]
    rows[3:3] = [[f"{label}: 95% interval at n={n}", *intervals(scope, key, scale)] for label, key, scale in
                 (("FD-cardiofair", "fd", 1.0), ("FD-cardiofair, image + mask", "fd_image_mask", 1.0),
                  ("KD-cardiofair x 1000", "kd", 1000.0)) if scope.get(f"{key}_interval")]
    notes = []
    if scope.get("matched_by_cell"):
        notes.append(f"Each draw takes both sets to the same count in every subgroup cell ({n} images each) and the "
                     "training set is weighted to that mix, so the distance does not reward or punish the subgroup mix.")
    if section.get("interval"):
        notes.append(f"Intervals: {section['interval']}. A distance is reported where the real reference's interval "
                     f"is narrower than the realism target's margin (FD-cardiofair at most "
                     f"{section.get('realism_target', FAR_DISTANCE_RATIO):g} times its reference).")
    groups, group_notes = group_rows(section)
    return Table(caption, header, rows + groups, notes + left_out_cells(scope) + group_notes)


def intervals(scope: Mapping[str, Any], key: str, scale: float = 1.0) -> list[str]:
    """A distance's 95% intervals, synthetic and reference, as ``[low, high]``."""
    return [MISSING if not pair else f"[{number(pair[0], 2, scale)}, {number(pair[1], 2, scale)}]"
            for pair in synthetic_and_reference(scope, f"{key}_interval")]


def realism_groups(section: Section) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(column, value, scope) of the realism per vendor and per centre, where the cohort records them."""
    return [(column, value, scope) for column in ("vendor", "centre")
            for value, scope in (section.get(f"by_{column}") or {}).items()]


def group_rows(section: Section) -> tuple[list[list[str]], list[str]]:
    """FD-cardiofair per vendor and centre with its intervals, and the notes of those not measured."""
    rows, notes = [], []
    for column, value, scope in realism_groups(section):
        if scope.get("status") != "ok":
            rows.append([f"FD-cardiofair, {column} {value}", MISSING, MISSING])
            notes.append(f"{column} {value}: {scope.get('status')}")
            continue
        figures = synthetic_and_reference(scope, "fd")
        rows.append([f"FD-cardiofair, {column} {value} (n={scope.get('n_compared')}; reference: its held-out vs its "
                     f"training images)", *(f"{number(v)} {i}" for v, i in zip(figures, intervals(scope, "fd")))])
    return rows, notes


def realism_summary(section: Section) -> list[str]:
    """The distances and the diversity, or why they were not measured."""
    scope = section["overall"]
    if scope["status"] != "ok":
        return [f"realism: {scope['status']}"]
    measures = ((f"FD-cardiofair (n={scope['n_compared']}, {scope['fd_draws']} draws)", "fd", 1.0),
                ("FD-cardiofair image+mask", "fd_image_mask", 1.0), ("KD-cardiofair x1000", "kd", 1000.0),
                ("MS-SSIM within set (lower = more diverse)", "ms_ssim", 1.0))
    lines = []
    for label, key, scale in measures:
        lines.append(summary_line(label, *(number(v, scale=scale) for v in synthetic_and_reference(scope, key))))
        if scope.get(f"{key}_interval"):
            lines.append(summary_line(f"  95% interval at n={scope['n_compared']}", *intervals(scope, key, scale)))
    for column, value, group in realism_groups(section):
        if group.get("status") != "ok":
            lines.append(f"realism {column} {value}: {group.get('status')}")
            continue
        lines += [summary_line(f"FD-cardiofair {column} {value} (n={group['n_compared']})",
                               *map(number, synthetic_and_reference(group, "fd"))),
                  summary_line("  95% interval", *intervals(group, "fd"))]
    return lines


def realism_verdict(section: Section) -> list[str]:
    """Realism unmeasured, or FD-cardiofair many times its real reference."""
    scope = section["overall"]
    if scope.get("status") != "ok":
        return [f"Realism was not measured: {scope.get('status')}."]
    synthetic, reference = synthetic_and_reference(scope, "fd")
    if synthetic is not None and reference and synthetic > section.get("realism_target", FAR_DISTANCE_RATIO) * reference:
        return [f"FD-cardiofair of the synthetic images is {synthetic / reference:.1f} times that of real "
                f"held-out images ({number(synthetic)} against {number(reference)}): they are told apart "
                "from real images easily."]
    return []


# --- the two-sample classifier test -----------------------------------------------------------


def _interval(scope: Mapping[str, Any], side: str) -> str:
    low, high = (scope.get("auroc_interval") or {}).get(side) or (None, None)
    return f"{number(low, 2)}-{number(high, 2)}"


def c2st_table(section: Section) -> Table:
    """The two-sample classifier's AUROC against real held-out images, beside real training images'."""
    scope = section["overall"]
    caption = ("Two-sample classifier test (C2ST): a small CNN trained to tell each set from real held-out (val + "
               f"test) images, {section.get('folds')} folds split by subject, {section.get('steps')} steps each; AUROC "
               "on the held-out folds, 0.5 = cannot be told apart, 1 = always told apart.")
    header = ["measure", "synthetic vs real held-out", "reference: real train vs real held-out"]
    if scope.get("status") != "ok":
        return Table(caption, header, [], [f"Not measured: {scope.get('status')}"])
    subjects = scope["n_subjects"]
    rows = [["AUROC", *map(number, synthetic_and_reference(scope, "auroc"))],
            [f"{section['interval']}", _interval(scope, "synthetic"), _interval(scope, "real_reference")],
            ["images (subjects)", f"{scope['n_synthetic']} ({subjects['synthetic']})",
             f"{scope['n_real_train']} ({subjects['real_train']})"]]
    notes = [f"Both sides are told from the same {scope['n_real_held_out']} real held-out images "
             f"({subjects['real_held_out']} subjects), drawn to the synthetic set's count per subgroup cell."]
    return Table(caption, header, rows, notes + left_out_cells(scope))


def c2st_summary(section: Section) -> list[str]:
    """The AUROC and its interval, or why the test did not run."""
    scope = section["overall"]
    if scope.get("status") != "ok":
        return [f"two-sample classifier test: {scope.get('status')}"]
    return [summary_line("C2ST AUROC vs real held-out (0.5 = no)",
                         *map(number, synthetic_and_reference(scope, "auroc"))),
            summary_line("  95% interval over subjects", _interval(scope, "synthetic"),
                         _interval(scope, "real_reference"))]


def c2st_verdict(section: Section) -> list[str]:
    """A classifier tells nearly every synthetic image from a real one, far more often than real from real."""
    scope = section["overall"]
    if scope.get("status") != "ok":
        return []
    synthetic, reference = synthetic_and_reference(scope, "auroc")
    low = scope["auroc_interval"]["synthetic"][0]
    high = scope["auroc_interval"]["real_reference"][1]
    # An interval is undefined where a handful of subjects leaves no resample with both sets in a fold.
    if any(value is None or math.isnan(value) for value in (synthetic, low, high)):
        return []
    if synthetic >= FAR_AUROC and low > high:
        return [f"A small classifier tells the synthetic images from real held-out ones with AUROC {number(synthetic)} "
                f"(real training images from the same: {number(reference)}): they are told apart from real images "
                "easily."]
    return []


# --- the Fréchet Radiomics Distance -----------------------------------------------------------

FRD_CITATION = "Konz, Osuala et al., Medical Image Analysis 2026, arXiv:2412.01496"


def _frd_frames(scope: Mapping[str, Any]) -> dict[str, Any]:
    return scope.get("frames") or {}


def frd_table(section: Section) -> Table:
    """FRD of the synthetic images from real training images, beside real held-out images', per frame."""
    scope = section["overall"]
    caption = (f"Fréchet Radiomics Distance (FRD {section.get('version')}, frd-score; {FRD_CITATION}): radiomic "
               f"features of {section.get('region', 'the heart')} in each frame, normalised by the real training "
               "images'; the log of the squared Fréchet distance from the real training images. Lower is closer; a "
               "difference of 1.1 is a squared distance 3 times as large.")
    header = ["frame", "synthetic vs real train", "reference: real held-out (val + test) vs real train"]
    if scope.get("status") != "ok":
        return Table(caption, header, [], [f"Not measured: {scope.get('status')}"])
    rows = [[f"{frame} (images: {d['n_images']['synthetic']} synthetic, {d['n_images']['real_held_out']} held-out, "
             f"{d['n_images']['real_train']} train)", *map(number, synthetic_and_reference(d, "frd"))]
            for frame, d in _frd_frames(scope).items()]
    notes = [f"Synthetic and held-out records drawn to the same count per subgroup cell ({scope['n_synthetic']} "
             f"each); {section.get('train_multiple')} real training records per compared record, drawn to the same "
             f"mix ({scope['n_real_train']}). {section.get('package', '')}."]
    return Table(caption, header, rows, notes + left_out_cells(scope))


def frd_summary(section: Section) -> list[str]:
    """FRD per frame, or why it was not measured."""
    scope = section["overall"]
    if scope.get("status") != "ok":
        return [f"FRD: {scope.get('status')}"]
    return [summary_line(f"FRD {section['version']} {frame} (n={d['n_images']['synthetic']}, "
                         f"{d['n_images']['real_train']} train)", *map(number, synthetic_and_reference(d, "frd")))
            for frame, d in _frd_frames(scope).items()]


# --- mask fidelity ------------------------------------------------------------------------------


def mask_fidelity_table(section: Section) -> Table:
    """Dice of the in-project segmenter against the conditioning mask, per frame and structure."""
    scope = section["overall"]
    floor = scope.get("shuffled_mask_floor") or {}
    caption = (f"Mask fidelity: Dice between the segmenter's output and the mask (higher is better); synthetic "
               f"n={scope.get('n_synthetic')}, real test n={scope.get('n_real_test')}.")
    header = ["frame, structure", "synthetic vs its conditioning mask", "reference: real test vs its own mask",
              "floor: real test vs another subject's mask"]
    structures = list(scope.get("synthetic") or scope.get("real_reference") or {})
    rows = [[structure_name(s), number((scope.get("synthetic") or {}).get(s)),
             number((scope.get("real_reference") or {}).get(s)), number(floor.get(s))] for s in structures]
    notes = [] if scope.get("status") == "ok" else [f"Status: {scope.get('status')}"]
    return Table(caption, header, rows, notes + ([scope["note"]] if scope.get("note") else []))


def mask_fidelity_summary(section: Section) -> list[str]:
    """Dice per frame and structure."""
    scope = section["overall"]
    return [summary_line("Dice " + structure.replace("_", " "), number(value),
                         number(scope["real_reference"].get(structure)))
            for structure, value in scope["synthetic"].items()]


def mask_fidelity_verdict(section: Section) -> list[str]:
    """Dice well below the real reference for some structure."""
    scope = section["overall"]
    low = [f"{structure_name(key)} {number(value)} (real {number(scope['real_reference'][key])})"
           for key, value in (scope.get("synthetic") or {}).items()
           if value is not None and (scope.get("real_reference") or {}).get(key)
           and value < FAR_DICE_SHARE * scope["real_reference"][key]]
    if not low:
        return []
    return [f"Mask fidelity is below {FAR_DICE_SHARE:.0%} of the real reference for " + ", ".join(low)
            + ": the images do not follow the anatomy they were asked for."]


# --- prompt fidelity and prompt effects ---------------------------------------------------------


def prompt_fidelity_table(section: Section) -> Table:
    """Balanced accuracy of the attribute classifiers: prompted attribute vs recorded attribute."""
    scope = section["overall"]
    chance = scope.get("chance") or {}
    caption = (f"Prompt fidelity: balanced accuracy of the in-project attribute classifier at reading each "
               f"attribute back from the image; synthetic n={scope.get('n_synthetic')}; reference: "
               f"{scope.get('reference')} (n={scope.get('n_real_same_cells')}), weighted to the synthetic set's mix "
               f"of cells, since the classifier reads rare cells worse; real test n={scope.get('n_real_test')}.")
    header = ["attribute", "synthetic (the prompted value)", "reference: real, same cells (the recorded value)",
              "real test, all cells", "chance"]
    synthetic, reference = scope.get("synthetic") or {}, scope.get("real_reference") or {}
    test = scope.get("real_test") or {}
    rows = [[name, number(synthetic.get(name)), number(reference.get(name)), number(test.get(name)),
             number(chance.get(name))] for name in (synthetic or reference)]
    notes = [f"The classifier barely reads {name} even on real images (reference {number(reference[name])}, chance "
             f"{number(chance[name])}): its synthetic figure is no evidence either way."
             for name in reference if name in chance and reference[name] is not None
             and reference[name] < chance[name] + 0.1]
    if scope.get("cells_without_reference"):
        notes.append("Cells without real images of their own (in the synthetic figure, not the reference): "
                     + ", ".join(scope["cells_without_reference"]))
    notes += [f"Not measured: {name} ({reason})." for name, reason in (scope.get("not_measured") or {}).items()]
    return Table(caption, header, rows, notes)


def prompt_fidelity_summary(section: Section) -> list[str]:
    """Balanced accuracy per attribute with its chance level, and where the reference came from;
    one line where no attribute was read."""
    scope = section["overall"]
    if not scope["synthetic"]:
        reasons: dict[str, list[str]] = {}
        for name, reason in (scope.get("not_measured") or {}).items():
            reasons.setdefault(reason, []).append(name)
        return ["prompt fidelity: not measured, the attribute judge was left out ("
                + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items()) + ")"]
    lines = [summary_line(f"prompt {name} balanced acc. (chance {scope['chance'][name]:.2f})", number(value),
                          number(scope["real_reference"].get(name)))
             for name, value in scope["synthetic"].items()]
    if "reference" in scope:
        lines.append(f"  (prompt reference: {scope['reference']}; real test, all cells: "
                     + ", ".join(f"{name} {number(value)}" for name, value in scope["real_test"].items()) + ")")
    return lines


def prompt_effects_table(section: Section) -> Table:
    """How far changing one word of the prompt moves the judge, beside changing the real cues."""
    caption = (f"Prompt effects: {section.get('pairs', 'no')} real test masks, each drawn with one seed under two "
               "prompts that differ in one attribute only, read by the attribute classifier; reference: the same "
               "real phantom subjects drawn with the cues of both values outside the heart (same heart, mask, pose "
               "and noise).")
    header = ["attribute (values)", "synthetic: reading moved", "synthetic: follows both", "synthetic: probability shift",
              "reference: reading moved", "reference: follows both", "reference: probability shift"]
    rows, notes = [], []
    for attribute, scope in (section.get("attributes") or {}).items():
        values = " / ".join((scope.get("synthetic") or scope.get("real_reference") or {}).get("values") or [])
        row = [f"{attribute} ({values})"]
        for side in ("synthetic", "real_reference"):
            effect = scope.get(side) or {}
            if effect.get("status") == "ok":
                row += [percent(effect.get("moved")), percent(effect.get("follows_both")),
                        number(effect.get("probability_shift"))]
            else:
                row += [MISSING] * 3
                notes.append(f"{attribute}, {side.replace('_', ' ')}: {effect.get('status', 'not measured')}")
        rows.append(row)
    if not section:
        notes.append("Not measured: this evaluation predates prompt effects.")
    return Table(caption, header, rows, notes)


def prompt_effects_summary(section: Section) -> list[str]:
    """The share of counterfactual pairs whose reading moved, per attribute; one line where no
    pair was read on either side."""
    sides = [side for effect in section["attributes"].values() for side in effect.values()]
    if not any(side.get("status") == "ok" for side in sides):
        return ["prompt effects: not measured (" + "; ".join(dict.fromkeys(side.get("status", "") for side in sides))
                + ")"]
    return [summary_line(f"prompt effect {name} (share of pairs moved)", number(effect["synthetic"].get("moved")),
                         number(effect["real_reference"].get("moved")))
            for name, effect in section["attributes"].items()]


# --- privacy ------------------------------------------------------------------------------------


def privacy_table(section: Section) -> Table:
    """Copy rates and nearest-neighbour distances to the training set, beside real validation."""
    scope, thresholds = section["overall"], section.get("threshold") or {}
    caption = (f"Privacy: nearest real training image of each synthetic image (n={scope.get('n_synthetic')}) and of "
               f"each real validation image (n={scope.get('n_real_val')}, the reference: real patients who are not "
               "in the training set). A copy is an image closer to a training image than the threshold.")
    header = ["measure", "synthetic -> real train", "reference: real val -> real train"]
    rows = []
    for space in ("pixel", "encoder"):
        if space not in (scope.get("copy_rate") or {}):
            continue
        threshold = thresholds.get(space, {})
        rows.append([f"copy rate, {space} space (threshold {number(threshold.get('value'))}, the "
                     f"{number(threshold.get('percentile'), 0)}th percentile of {threshold.get('of', 'n/a')})",
                     *map(percent, synthetic_and_reference(scope, "copy_rate", space))])
        rows.append([f"median nearest-neighbour distance, {space} space",
                     *map(number, synthetic_and_reference(scope, "median_nn_distance", space))])
    notes = []
    if "median_distance_to_mask_source" in scope:
        notes.append(f"Median pixel distance of a synthetic image to the training image whose mask it was drawn on: "
                     f"{number(scope['median_distance_to_mask_source'])} ({scope.get('mask_source_not_in_train', 0)} "
                     "synthetic images took their mask from outside the training split and are not counted).")
    if scope.get("status") != "ok":
        notes.append(f"Status: {scope.get('status')}")
    return Table(caption, header, rows, notes + ([scope["note"]] if scope.get("note") else []))


def privacy_summary(section: Section) -> list[str]:
    """The copy rate in each space."""
    return [summary_line(f"copy rate ({space})", *map(number, synthetic_and_reference(section["overall"], "copy_rate",
                                                                                       space)))
            for space in ("pixel", "encoder")]


# --- the masks themselves -----------------------------------------------------------------------


def mask_geometry_table(section: Section) -> Table:
    """The synthetic masks per cell: validity, geometry distance to real held-out masks and (on a
    phantom) to fresh subjects of the cell, beside the distance between two real samples."""
    if not section:
        return Table("Synthetic masks: not measured (this evaluation predates the mask measures).", [], [])
    validity, novelty = section["validity"], section["novelty"]
    header = ["cell", "synthetic masks", "valid", "geometry distance to real held-out (synthetic / real train)",
              "to phantom truth (synthetic / fresh)", "ratio", "median nearest-training distance (synthetic / real "
              "held-out / fresh)"]
    rows = []
    for cell, scope in section["cells"].items():
        truth = scope.get("distance_to_phantom_truth") or {}
        near = scope.get("median_nearest_training_distance") or {}
        rows.append([cell.replace("|", ", "), str(scope["n_synthetic"]), percent(scope["valid_share"]),
                     " / ".join(map(number, synthetic_and_reference(scope, "distance_to_real_held_out"))) +
                     f" ({scope['n_real_held_out']} held-out, {scope['n_real_train']} train)",
                     " / ".join(map(number, (truth.get("synthetic"), truth.get("real_reference")))) if truth else MISSING,
                     number(truth.get("ratio"), 2) if truth else MISSING,
                     " / ".join(number(near.get(k)) for k in ("synthetic", "real_reference", "phantom_truth"))])
    median = novelty["median_nearest_training_distance"]
    notes = [f"{percent(validity['valid_share'])} of {validity['n']} synthetic masks pass the anatomical checks"
             + (f"; the mask generator rejected {percent(validity['rejected_share_of_draws'])} of its draws on the way"
                if "rejected_share_of_draws" in validity else "") + ".",
             f"Novelty: median distance (1 - mean Dice) of a synthetic mask to its nearest training mask "
             f"{number(median['synthetic'])}, of a real held-out mask {number(median['real_reference'])}; closer than "
             f"{number(novelty['threshold'])} ({novelty['of']}): {percent(novelty['copy_rate']['synthetic'])} of synthetic "
             f"masks, {percent(novelty['copy_rate']['real_reference'])} of real validation masks. A borrowed mask is "
             "at distance 0.",
             "Geometry distance: the mean over ED LV cavity area, ED myocardial thickness, ED RV area and the "
             "contraction index of the 1-D Wasserstein distance, each in units of the training masks' spread."]
    return Table("Synthetic masks per cell: are they hearts of their cell, and new ones?", header, rows, notes)


def mask_geometry_summary(section: Section) -> list[str]:
    """Validity, novelty and, on a phantom, the distance of each cell's geometry to the truth."""
    if not section:
        return []
    novelty = section["novelty"]
    lines = [summary_line("masks passing the anatomical checks", number(section["validity"]["valid_share"]), ""),
             summary_line("mask nearest-training distance, median",
                          *map(number, synthetic_and_reference(novelty, "median_nearest_training_distance"))),
             summary_line("mask copy rate", *map(number, synthetic_and_reference(novelty, "copy_rate")))]
    for cell, scope in section["cells"].items():
        truth = scope.get("distance_to_phantom_truth")
        if truth:
            lines.append(summary_line("mask geometry vs phantom truth " + cell,
                                      *map(number, synthetic_and_reference(scope, "distance_to_phantom_truth"))))
    return lines


# --- the registry -------------------------------------------------------------------------------

_COMPUTE = "cardiofair.metrics.quality"
REALISM_PAGE = Page("realism", "Realism")
PROMPT_PAGE = Page("prompt-fidelity", "Prompt fidelity")

METRICS: tuple[Metric, ...] = (
    # {"feature_space": str, "realism_target": float, "interval": how intervals are drawn, "overall": SCOPE,
    # "cells": {cell: SCOPE}, and where the real cohort records them "by_vendor" / "by_centre": {value: SCOPE}};
    # a SCOPE holds the figures, their "<measure>_interval" ({side: [low, high]}) at the compared n, the image
    # counts and a "status" ("ok" or why a figure is missing, with "n_needed" where the interval was too wide).
    Metric("realism", f"{_COMPUTE}:measure_realism", realism_table, realism_summary, realism_verdict,
           REALISM_PAGE, by_cell=True, in_cards=True),
    # {"folds", "steps", "batch", "interval": how the interval is drawn, "overall": SCOPE}; SCOPE holds
    # "auroc" and "auroc_interval" ([low, high]) of each side, the image and subject counts and a "status".
    Metric("c2st", f"{_COMPUTE}:measure_c2st", c2st_table, c2st_summary, c2st_verdict, REALISM_PAGE, in_cards=True),
    # {"version", "region", "train_multiple", "package": frd-score's and pyradiomics' versions, "overall": SCOPE};
    # SCOPE holds the record counts, a "status" and "frames": {frame: {"frd": {synthetic, real_reference},
    # "n_images": {...}, "n_features": {...}}}.
    # No verdict: how far FRD may lie from its reference before images look unreal is not yet measured.
    Metric("frd", f"{_COMPUTE}:measure_frd", frd_table, frd_summary, page=REALISM_PAGE),
    # {"overall": SCOPE (with the shuffled-mask floor), "cells": {...}}
    Metric("mask_fidelity", f"{_COMPUTE}:measure_mask_fidelity", mask_fidelity_table, mask_fidelity_summary,
           mask_fidelity_verdict, Page("mask-fidelity", "Mask fidelity"), by_cell=True, in_cards=True),
    # {"overall": SCOPE (with the real test reference and chance), "cells": {...}}
    Metric("prompt_fidelity", f"{_COMPUTE}:measure_prompt_fidelity", prompt_fidelity_table, prompt_fidelity_summary,
           page=PROMPT_PAGE, by_cell=True, in_cards=True),
    # {"threshold": {...}, "overall": SCOPE, "cells": {...}, "closest_pairs": [...]}
    Metric("privacy", f"{_COMPUTE}:measure_privacy", privacy_table, privacy_summary, page=Page("privacy", "Privacy"),
           by_cell=True, in_cards=True),
    # {"validity": {...}, "novelty": {...}, "cells": {cell: {...}}, "measures": [...]}
    Metric("mask_geometry", f"{_COMPUTE}:measure_mask_geometry", mask_geometry_table, mask_geometry_summary),
    # {"pairs": int, "seed": int, "attributes": {attribute: {"synthetic": EFFECT, "real_reference": EFFECT}}},
    # EFFECT: the counterfactual pairs' moved, follows_both and probability_shift.
    Metric("prompt_effects", f"{_COMPUTE}:measure_prompt_effects", prompt_effects_table, prompt_effects_summary,
           page=PROMPT_PAGE),
)


def shown_together() -> list[list[Metric]]:
    """The metrics in the order they are shown: those that share a page together, where the
    first of them stands in ``METRICS``."""
    groups: dict[Any, list[Metric]] = {}
    for metric in METRICS:
        groups.setdefault(metric.page or metric.name, []).append(metric)
    return list(groups.values())
