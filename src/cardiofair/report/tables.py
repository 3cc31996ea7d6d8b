"""The report's numbers as plain tables, built once and rendered twice (HTML page, Markdown cards).

Every table puts the synthetic figure beside its real reference and names the reference, because
a realism or privacy number on its own cannot be read. Pure pandas: no torch, no matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from cardiofair.data.records import LABELS, STRUCTURES
from cardiofair.results import FairnessResult, QualityResult

MISSING = "n/a"
# Dice keys of synthetic_quality.json (``ED_LV``) spelled out with the project's label names.
STRUCTURE_NAMES = {short: LABELS[label] for label, short in STRUCTURES.items()}
# Gap measures shown on the page; the ratios and the rest stay in the fairness run's gaps.csv.
GAP_MEASURES = {
    "equalized_odds_difference": "equalized odds difference",
    "equal_opportunity_difference": "equal opportunity difference (TPR gap)",
    "demographic_parity_difference": "demographic parity difference",
    "balanced_accuracy_difference": "balanced accuracy difference (max - min)",
    "balanced_accuracy_group_min": "worst-group balanced accuracy",
}
OVERALL_MEASURES = {"balanced_accuracy": "balanced accuracy", "roc_auc": "AUROC",
                    "true_positive_rate": "TPR (sensitivity)", "false_positive_rate": "FPR"}


@dataclass
class Table:
    """A captioned table of already formatted cells, and notes to print under it."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def number(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    """A figure with ``digits`` decimals, or ``n/a`` when it is missing (null or NaN in the JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value) * scale:.{digits}f}"


def percent(value: Any) -> str:
    """A [0, 1] rate as a percentage with one decimal."""
    return MISSING if value is None else f"{100.0 * float(value):.1f}%"


def with_interval(entry: Mapping[str, Any] | None, key: str = "bootstrap_interval", signed: bool = False) -> str:
    """``mean [low, high]`` of a fairness summary (or ``difference`` of a comparison); the reason
    when the measure is undefined."""
    if entry is None:
        return MISSING
    value = entry.get("mean", entry.get("difference"))
    if value is None:
        return f"undefined ({entry['reason']})" if entry.get("reason") else MISSING
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    low, high = (entry.get(key) or [None, None])[:2]
    if low is None or high is None:
        return text
    return f"{text} [{low:+.2f}, {high:+.2f}]" if signed else f"{text} [{low:.2f}, {high:.2f}]"


def structure_name(key: str) -> str:
    """``ED_MYO`` -> ``ED LV myocardium``."""
    frame, _, structure = key.partition("_")
    return f"{frame} {STRUCTURE_NAMES.get(structure, structure)}"


# --- cohort -------------------------------------------------------------------------------------


def prevalence_grid(binned: pd.DataFrame, positive: str | Sequence[str], rows: str = "sex",
                    columns: str = "age") -> pd.DataFrame:
    """Records, records with the ``positive`` diagnosis (or any of several) and their prevalence
    in percent per (``rows`` x ``columns``) cell of binned attributes
    (:func:`cardiofair.data.summary.with_cells`), long format; with a boolean ``synthetic``
    column in ``binned``, also the synthetic records per cell."""
    marked = binned.assign(_positive=binned["diagnosis"].isin([positive] if isinstance(positive, str) else positive))
    counts = {"n": ("_positive", "size"), "positives": ("_positive", "sum")}
    if "synthetic" in binned.columns:
        counts["synthetic"] = ("synthetic", "sum")
    table = marked.groupby([rows, columns], sort=True).agg(**counts).reset_index()
    table["positives"] = table["positives"].astype(int)
    table["prevalence"] = 100.0 * table["positives"] / table["n"]
    return table


# --- synthetic quality (synthetic_quality.json) -------------------------------------------------


def synthetic_and_reference(scope: Mapping[str, Any], key: str, inner: str | None = None) -> tuple[Any, Any]:
    """A measure's ``synthetic`` figure and its ``real_reference`` in a quality scope (None where missing)."""
    value = scope.get(key) or {}
    if inner is not None:
        value = value.get(inner) or {}
    return value.get("synthetic"), value.get("real_reference")


def realism_table(quality: QualityResult) -> Table:
    """Distances to the real training set: synthetic beside real held-out at the same size."""
    scope = quality.realism["overall"]
    caption = ("Realism: distance of each set to the real training set in the evaluator's feature space "
               f"({quality.realism.get('feature_space', 'feature space not recorded')}). Lower is closer.")
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
    notes = []
    if scope.get("matched_by_cell"):
        notes.append(f"Each draw takes both sets to the same count in every subgroup cell ({n} images each) and the "
                     "training set is weighted to that mix, so the distance does not reward or punish the subgroup mix.")
    if scope.get("cells_without_real_held_out"):
        notes.append("Cells without real held-out images (left out of the overall figure): "
                     + ", ".join(scope["cells_without_real_held_out"]))
    return Table(caption, header, rows, notes)


def mask_fidelity_table(quality: QualityResult) -> Table:
    """Dice of the in-project segmenter against the conditioning mask, per frame and structure."""
    scope = quality.mask_fidelity["overall"]
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


def prompt_fidelity_table(quality: QualityResult) -> Table:
    """Balanced accuracy of the attribute classifiers: prompted attribute vs recorded attribute."""
    scope = quality.prompt_fidelity["overall"]
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


def prompt_effects_table(quality: QualityResult) -> Table:
    """How far changing one word of the prompt moves the judge, beside changing the real cues."""
    effects = quality.prompt_effects
    caption = (f"Prompt effects: {effects.get('pairs', 'no')} real test masks, each drawn with one seed under two "
               "prompts that differ in one attribute only, read by the attribute classifier; reference: the same "
               "real phantom subjects drawn with the cues of both values outside the heart (same heart, mask, pose "
               "and noise).")
    header = ["attribute (values)", "synthetic: reading moved", "synthetic: follows both", "synthetic: probability shift",
              "reference: reading moved", "reference: follows both", "reference: probability shift"]
    rows, notes = [], []
    for attribute, scope in (effects.get("attributes") or {}).items():
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
    if not effects:
        notes.append("Not measured: this evaluation predates prompt effects.")
    return Table(caption, header, rows, notes)


def privacy_table(quality: QualityResult) -> Table:
    """Copy rates and nearest-neighbour distances to the training set, beside real validation."""
    privacy = quality.privacy
    scope, thresholds = privacy["overall"], privacy.get("threshold") or {}
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


def evaluator_table(quality: QualityResult) -> Table:
    """How well the in-project evaluators do on real validation images: the ceiling of every figure."""
    validation = quality.evaluators.get("validation") or {}
    rows = [[f"Dice, {structure_name(key[len('dice_'):])}" if key.startswith("dice_")
             else key.replace("balanced_accuracy_", "balanced accuracy, "), number(value)]
            for key, value in validation.items()]
    return Table("The evaluators, trained by cardiofair on the real training split, scored on real validation images",
                 ["evaluator figure", "real val"], rows)


def closest_pairs_table(quality: QualityResult) -> Table:
    """The synthetic images nearest to a training image, with their pixel distances."""
    privacy = quality.privacy
    threshold = (privacy.get("threshold") or {}).get("pixel", {}).get("value")
    rows = [[str(p.get("synthetic")), str(p.get("nearest_training_record")), number(p.get("pixel_distance")),
             "yes" if p.get("flagged_as_copy") else "no"] for p in privacy.get("closest_pairs") or []]
    return Table(f"Closest synthetic-to-training pairs, nearest first (pixel copy threshold {number(threshold)})",
                 ["synthetic record", "nearest real training record", "pixel distance", "below the copy threshold"],
                 rows)


def cells_table(quality: QualityResult) -> Table:
    """Per planned cell: realism, mask fidelity and copy rate, each with its reference."""
    attributes = quality.cell_attributes
    realism, masks, privacy = (getattr(quality, s)["cells"] for s in ("realism", "mask_fidelity", "privacy"))
    rows = []
    for cell in realism:
        fd = realism[cell]
        dice = masks.get(cell, {})
        copy = privacy.get(cell, {})
        mean_dice = [_mean(dice.get("synthetic")), _mean(dice.get("real_reference"))]
        notes = _shortfalls([s for s in (fd.get("status"), dice.get("note"), copy.get("note")) if s and s != "ok"])
        rows.append([cell.replace("|", ", "), str(fd.get("n_synthetic", dice.get("n_synthetic", MISSING))),
                     " / ".join(map(number, synthetic_and_reference(fd, "fd"))), " / ".join(map(number, mean_dice)),
                     " / ".join(map(percent, synthetic_and_reference(copy, "copy_rate", "pixel"))), notes])
    return Table(f"Per synthetic cell ({', '.join(attributes)}): synthetic / real reference (the per-cell CSV files "
                 "of the evaluation hold every figure)",
                 ["cell", "synthetic images", "FD-cardiofair", "mean Dice (6 structures)", "copy rate (pixel)", "notes"],
                 rows)


def mask_geometry_table(quality: QualityResult) -> Table:
    """The synthetic masks per cell: validity, geometry distance to real held-out masks and (on a
    phantom) to fresh subjects of the cell, beside the distance between two real samples."""
    masks = quality.mask_geometry
    if not masks:
        return Table("Synthetic masks: not measured (this evaluation predates the mask measures).", [], [])
    validity, novelty = masks["validity"], masks["novelty"]
    header = ["cell", "synthetic masks", "valid", "geometry distance to real held-out (synthetic / real train)",
              "to phantom truth (synthetic / fresh)", "ratio", "median nearest-training distance (synthetic / real "
              "held-out / fresh)"]
    rows = []
    for cell, scope in masks["cells"].items():
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


TOO_FEW = "too few images for a stable figure: "


def _shortfalls(messages: list[str]) -> str:
    # The evaluation words each shortfall as "too few images for a stable figure: 9 real
    # held-out (need 20)"; one cell has up to three, so they are merged into one line.
    counts, need, other = [], "", []
    for message in dict.fromkeys(messages):
        body, _, tail = message[len(TOO_FEW):].rpartition(" (need ")
        if message.startswith(TOO_FEW) and body:
            counts += body.split(", ")
            need = tail.rstrip(")")
        else:
            other.append(message)
    if counts:
        other.insert(0, f"too few images for a stable figure (need {need}): " + ", ".join(dict.fromkeys(counts)))
    return "; ".join(other)


def _mean(values: Mapping[str, float] | None) -> float | None:
    defined = [v for v in (values or {}).values() if v is not None]
    return sum(defined) / len(defined) if defined else None


# --- fairness (fairness.json) -------------------------------------------------------------------


def overall_fairness_table(fairness: FairnessResult) -> Table:
    """Each arm's overall test metrics, mean over repeats with the test-set bootstrap interval."""
    rows = [[arm, *(with_interval(tree["overall"].get(m)) for m in OVERALL_MEASURES)]
            for arm, tree in fairness.arms.items()]
    return Table("Overall test-set metrics per arm: mean over repeats [95% bootstrap interval over test subjects]",
                 ["arm", *OVERALL_MEASURES.values()], rows)


def gap_table(fairness: FairnessResult) -> Table:
    """Fairness gaps per attribute (rows) and arm (columns)."""
    arms = list(fairness.arms)
    reference = fairness.reference()
    rows = []
    for attribute in reference["attributes"]:
        for measure, label in GAP_MEASURES.items():
            entries = [fairness.arms[arm]["attributes"].get(attribute, {}).get("gaps", {}).get(measure)
                       for arm in arms]
            rows.append([attribute, label, *(with_interval(e) for e in entries)])
    return Table("Fairness gaps by attribute: mean over repeats [95% bootstrap interval over test subjects]; "
                 "max-min gaps are unsigned, so a finite test set shows a positive gap even for a fair classifier",
                 ["attribute", "measure", *arms], rows)


def comparison_table(fairness: FairnessResult, versus: bool = False) -> Table:
    """Each arm's paired difference against the reference arm over the same seeds; with
    ``versus``, that of each pair of arms compared with each other (``fairness.versus``)."""
    reference_arm = fairness.reference_arm
    if versus:
        comparisons = fairness.versus_trees()
        title = "Paired difference of one arm minus another over the same seeds [95% t-interval over seeds], " \
                "Holm-adjusted p over the pairs"
    else:
        comparisons = fairness.comparisons
        title = f"Paired difference of each arm minus {reference_arm!r} over the same seeds [95% t-interval over " \
                "seeds], Holm-adjusted p over the arms"
    arms = list(comparisons)
    paths = [("overall", m, OVERALL_MEASURES[m]) for m in ("balanced_accuracy", "roc_auc")]
    attributes = fairness.arms[reference_arm]["attributes"] if reference_arm in fairness.arms else {}
    paths += [(a, m, label) for a in attributes for m, label in GAP_MEASURES.items()]

    def entry(arm: str, attribute: str, measure: str) -> Mapping[str, Any] | None:
        tree = comparisons[arm]
        return tree.get("overall", {}).get(measure) if attribute == "overall" else \
            tree.get("attributes", {}).get(attribute, {}).get("gaps", {}).get(measure)

    # A reason (e.g. no t-test when the differences do not vary) is a numbered note, not
    # repeated in every cell.
    reasons: dict[str, int] = {}

    def cell(value: Mapping[str, Any] | None) -> str:
        text = with_interval(value, key="interval", signed=True)
        if value is not None and value.get("p_holm") is not None:
            text += f", p = {value['p_holm']:.3g}"
        elif value is not None and value.get("reason"):
            text += f" (note {reasons.setdefault(value['reason'], len(reasons) + 1)})"
        return text

    rows = [[attribute, label, *(cell(entry(arm, attribute, m)) for arm in arms)] for attribute, m, label in paths]
    return Table(title, ["attribute", "measure", *arms], rows,
                 [f"note {number}: {reason}" for reason, number in reasons.items()])


def main_gap(fairness: FairnessResult) -> tuple[list[str], str] | None:
    """(path, name) of the gap the study is about: the oracle shares' measure, else the TPR of
    the threshold attribute's group with fewest positives minus its reference group's."""
    if fairness.oracle_shares.get("path"):
        return list(fairness.oracle_shares["path"]), fairness.oracle_shares["measure"]
    power = (fairness.data.get("test_set") or {}).get("power") or {}
    if not power.get("group"):
        return None
    return (["attributes", fairness.settings["threshold_attribute"], "groups", power["group"],
             "true_positive_rate_vs_reference"], f"TPR {power['group']} - {power['reference_group']}")


def _at(tree: Any, path: Sequence[str]) -> Mapping[str, Any] | None:
    for key in path:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


def headline(fairness: FairnessResult) -> str | None:
    """The user's question answered in one line: what the first arm compared with others
    (real+synthetic by default) did to the main gap, as a share of the oracle's change where
    there is an oracle, and against each arm it was compared with."""
    gap = main_gap(fairness)
    if not fairness.versus or gap is None:
        return None
    path, measure = gap
    arm = fairness.versus[0]["arm"]
    share = (fairness.oracle_shares.get("arms") or {}).get(arm) or {}
    if share.get("share") is not None and not math.isnan(share["share"]):
        low, high = share["interval"]
        interval = "" if low is None or high is None or math.isnan(low) or math.isnan(high) else \
            f" [{low:.0%}, {high:.0%}]"
        first = f"{arm} closed {share['share']:.0%}{interval} of the oracle's change of {measure}"
    else:
        change = _at(fairness.comparisons.get(arm), path)
        first = f"{arm} changed {measure} by {with_interval(change, 'interval', signed=True)} against " \
                f"{fairness.reference_arm}"
    against = [f"against {pair['other']}: {with_interval(_at(pair['comparisons'], path), 'interval', signed=True)}"
               for pair in fairness.versus if pair["arm"] == arm]
    return "; ".join([first, *against]) + " (paired over the same seeds, 95% t-interval)."

def group_series(fairness: FairnessResult, attribute: str, metric: str) -> pd.DataFrame:
    """Per arm and group of one attribute: mean, bootstrap interval, test count and positives,
    and the reason where the metric is undefined (the bar charts' data)."""
    rows = []
    for arm, tree in fairness.arms.items():
        for group, measures in tree["attributes"].get(attribute, {}).get("groups", {}).items():
            entry = measures.get(metric) or {}
            low, high = (entry.get("bootstrap_interval") or [None, None])[:2]
            rows.append({"arm": arm, "dose": tree["dose"], "group": group, "mean": entry.get("mean"), "low": low, "high": high,
                         "count": (measures.get("count") or {}).get("mean"),
                         "positives": (measures.get("positives") or {}).get("mean"), "reason": entry.get("reason")})
    return pd.DataFrame(rows, columns=["arm", "dose", "group", "mean", "low", "high", "count", "positives", "reason"])


def dose_series(fairness: FairnessResult) -> pd.DataFrame:
    """The dose-response figure's data: per dosed arm and dose, the paired change of the main gap
    (``oracle_shares``' measure, else the threshold attribute's first non-reference group's TPR
    gap) against ``real`` with its t-interval over seeds; dose 0 is ``real`` itself (no change).
    Empty when no arm ran at a dose other than 1."""
    comparisons, gap = fairness.comparisons, main_gap(fairness)
    if gap is None or not any(fairness.arm_dose(name)[1] != 1.0 for name in comparisons):
        return pd.DataFrame(columns=["arm", "dose", "difference", "low", "high"])
    path = gap[0]
    dosed = {fairness.arm_dose(name)[0] for name in comparisons if fairness.arm_dose(name)[1] != 1.0}
    rows = [{"arm": arm, "dose": 0.0, "difference": 0.0, "low": 0.0, "high": 0.0} for arm in sorted(dosed)]
    for name, tree in comparisons.items():
        arm, dose = fairness.arm_dose(name)
        if arm not in dosed:
            continue
        tree = _at(tree, path)
        if tree:
            low, high = tree["interval"]
            rows.append({"arm": arm, "dose": dose, "difference": tree["difference"], "low": low, "high": high})
    return pd.DataFrame(rows).sort_values(["arm", "dose"], ignore_index=True)


# --- synthesis plan and synthetic records --------------------------------------------------------

PLAN_COLUMNS = ("cell", "real_count", "requested_count", "synthetic_count", "target_count", "prompt", "mask_policy",
                "low_support", "unseen", "capped")
PROVENANCE_COLUMNS = {"model_id": "model", "model_hash": "model weights hash", "sampler": "sampler",
                      "sampler_steps": "sampler steps", "guidance_scale": "guidance scale",
                      "guidance_start": "unguided share of steps", "autoguidance": "autoguidance",
                      "controlnet_scale": "ControlNet scale",
                      "mask_policy": "mask policy"}


def plan_table(plan: pd.DataFrame) -> Table:
    """The plan's cells that get synthetic records, and those it asked for but could not fill."""
    columns = [c for c in PLAN_COLUMNS if c in plan.columns]
    filled = plan[plan["synthetic_count"] > 0]
    rows = [[str(value) for value in row] for row in filled[columns].itertuples(index=False)]
    real, synthetic = int(plan["real_count"].sum()), int(plan["synthetic_count"].sum())
    notes = [f"{len(plan)} cells; {real} real + {synthetic} planned synthetic records "
             f"({synthetic / max(real, 1):.2f} synthetic per real)."]
    if "requested_count" in plan.columns:
        unfilled = plan[(plan["requested_count"] > 0) & (plan["synthetic_count"] == 0)]
        flags = [c for c in ("low_support", "unseen") if c in plan.columns]
        if len(unfilled):
            notes.append("Asked for but not filled: " + ", ".join(
                cell.replace("|", ", ") + "".join(f" ({f.replace('_', ' ')})" for f in flags if row[f])
                for cell, row in zip(unfilled["cell"], unfilled.to_dict("records"))))
    return Table("Synthesis plan: cells that get synthetic records", [c.replace("_", " ") for c in columns], rows,
                 notes)


def synthetic_cells_table(rows: pd.DataFrame) -> Table:
    """Synthetic records per generated cell: count, distinct prompts, mask policy and sources."""
    key = rows["cell"] if "cell" in rows.columns else rows["prompt"]
    table = []
    for cell, part in rows.groupby(key.astype(str), sort=True):
        policies = ", ".join(sorted(part["mask_policy"].astype(str).unique())) if "mask_policy" in part else MISSING
        sources = str(part["mask_source_record"].nunique()) if "mask_source_record" in part else MISSING
        warped = str(int(part["mask_augmented"].astype(str).str.lower().eq("true").sum())) \
            if "mask_augmented" in part else MISSING
        table.append([cell.replace("|", ", "), str(len(part)), str(part["prompt"].nunique()), policies, sources, warped])
    return Table(f"Synthetic records per cell ({len(rows)} in all)",
                 ["cell", "records", "distinct prompts", "mask policy", "real training masks used", "masks warped"],
                 table)


def provenance_table(rows: pd.DataFrame) -> Table:
    """The generator and sampler settings the synthetic records were drawn with."""
    table = [[label, ", ".join(sorted(rows[column].astype(str).unique()))]
             for column, label in PROVENANCE_COLUMNS.items() if column in rows.columns]
    return Table("How the synthetic records were drawn (from their provenance columns)", ["setting", "value"], table)


# --- the verdict at the top of the page ----------------------------------------------------------

# A distance this many times its real reference, or a Dice below this share of it, is far from
# real: at the default study's 4x the images are told apart from real ones at a glance.
FAR_DISTANCE_RATIO = 3.0
FAR_DICE_SHARE = 0.8


def quality_verdict(quality: QualityResult) -> list[str]:
    """Plain sentences on how far the synthetic images are from real ones, for the top of the
    report: a distance many times its real reference, mask fidelity well below it, or too few
    images to tell. Empty when the evaluation shows none of these."""
    sentences = []
    realism = quality.realism["overall"]
    if realism.get("status") != "ok":
        sentences.append(f"Realism was not measured: {realism.get('status')}.")
    else:
        synthetic, reference = synthetic_and_reference(realism, "fd")
        if synthetic is not None and reference and synthetic > FAR_DISTANCE_RATIO * reference:
            sentences.append(f"FD-cardiofair of the synthetic images is {synthetic / reference:.1f} times that of real "
                             f"held-out images ({number(synthetic)} against {number(reference)}): they are told apart "
                             "from real images easily.")
    masks = quality.mask_fidelity["overall"]
    low = [f"{structure_name(key)} {number(value)} (real {number(masks['real_reference'][key])})"
           for key, value in (masks.get("synthetic") or {}).items()
           if value is not None and (masks.get("real_reference") or {}).get(key)
           and value < FAR_DICE_SHARE * masks["real_reference"][key]]
    if low:
        sentences.append(f"Mask fidelity is below {FAR_DICE_SHARE:.0%} of the real reference for " + ", ".join(low)
                         + ": the images do not follow the anatomy they were asked for.")
    return sentences
