"""The report's numbers as plain tables, built once and rendered twice (HTML page, Markdown cards).

Every table puts the synthetic figure beside its real reference and names the reference, because
a realism or privacy number on its own cannot be read. Each quality metric's own table is part of
its object (:mod:`cardiofair.metrics.quality_metrics`); here are the views across them. Pure
pandas: no torch, no matplotlib.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from cardiofair.downstream.arms import ORACLE_ARM
from cardiofair.formatting import MISSING, Table, number, percent
from cardiofair.metrics.group_metrics import MATCHED_TPR
from cardiofair.metrics.quality_metrics import METRICS, structure_name, synthetic_and_reference
from cardiofair.plan import dose_count
from cardiofair.results import FairnessResult, QualityResult

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
    privacy = quality.section("privacy")
    threshold = (privacy.get("threshold") or {}).get("pixel", {}).get("value")
    rows = [[str(p.get("synthetic")), str(p.get("nearest_training_record")), number(p.get("pixel_distance")),
             "yes" if p.get("flagged_as_copy") else "no"] for p in privacy.get("closest_pairs") or []]
    return Table(f"Closest synthetic-to-training pairs, nearest first (pixel copy threshold {number(threshold)})",
                 ["synthetic record", "nearest real training record", "pixel distance", "below the copy threshold"],
                 rows)


def cells_table(quality: QualityResult) -> Table:
    """Per planned cell: realism, mask fidelity and copy rate, each with its reference."""
    attributes = quality.cell_attributes
    realism, masks, privacy = (quality.section(s)["cells"] for s in ("realism", "mask_fidelity", "privacy"))
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


TOO_FEW = "too few images for a stable figure: "


def _shortfalls(messages: list[str]) -> str:
    # The evaluation words each shortfall as "too few images for a stable figure: 9 real
    # held-out (need 20)"; one cell has up to three, so those that need as many are merged
    # into one line.
    counts: dict[str, list[str]] = {}
    other = []
    for message in dict.fromkeys(messages):
        body, _, tail = message[len(TOO_FEW):].rpartition(" (need ")
        if message.startswith(TOO_FEW) and body:
            counts.setdefault(tail.rstrip(")"), []).extend(body.split(", "))
        else:
            other.append(message)
    merged = [f"too few images for a stable figure (need {need}): " + ", ".join(dict.fromkeys(parts))
              for need, parts in counts.items()]
    return "; ".join(merged + other)


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


def at_path(tree: Any, path: Sequence[str]) -> Any:
    """The entry at ``path`` in a result's nested sections; None where any key is missing."""
    for key in path:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


def headline(fairness: FairnessResult) -> str | None:
    """The user's question answered in one line: what the first arm compared with others
    (real+synthetic by default) did to the main gap, as a share of the oracle's change where
    there is an oracle, and against each arm it was compared with; then the same for the thin
    group's AUROC."""
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
        change = at_path(fairness.comparisons.get(arm), path)
        first = f"{arm} changed {measure} by {with_interval(change, 'interval', signed=True)} against " \
                f"{fairness.reference_arm}"
    # The same gap with each group's own threshold at one FPR: what is left once the prior shift
    # (which moves TPR and FPR together) is taken out.
    matched = at_path(fairness.comparisons.get(arm), [*path[:-1], f"{MATCHED_TPR}_vs_reference"])
    if matched is not None and matched.get("difference") is not None:
        first += (f" (at each group's own threshold for an FPR of {fairness.settings['matched_fpr']:g}: "
                  f"{with_interval(matched, 'interval', signed=True)}; the rest is a prior shift)")
    pairs = [pair for pair in fairness.versus if pair["arm"] == arm]

    def against(measure: Sequence[str]) -> list[str]:
        return [f"against {pair['other']}: {with_interval(at_path(pair['comparisons'], measure), 'interval', signed=True)}"
                for pair in pairs]

    answer = "; ".join([first, *against(path)]) + " (paired over the same seeds, 95% t-interval)."
    # What new records can teach beyond moving the threshold: the thin group's AUROC, a ranking
    # measure that a shift of the prior (the threshold falling elsewhere) leaves unchanged.
    ranking_path = [*path[:-1], "roc_auc"]
    ranking = at_path(fairness.comparisons.get(arm), ranking_path)
    if ranking is None or ranking.get("difference") is None:
        return answer
    ranking_line = f"On AUROC {path[-2]}, which no threshold moves: {with_interval(ranking, 'interval', signed=True)}"
    oracle = at_path(fairness.comparisons.get(ORACLE_ARM), ranking_path)
    # A share of a change the oracle itself does not make beyond noise would be noise.
    low = ((oracle or {}).get("interval") or [None])[0]
    if oracle and oracle.get("difference") and low is not None and low > 0:
        ranking_line += f", {ranking['difference'] / oracle['difference']:.0%} of the oracle's " \
                        f"{with_interval(oracle, 'interval', signed=True)}"
    return f"{answer} {'; '.join([ranking_line, *against(ranking_path)])}."


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
        tree = at_path(tree, path)
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
                      "attribute_guidance": "attribute guidance",
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


def cap_lift_table(plan: pd.DataFrame, doses: Sequence[float]) -> Table | None:
    """The plan's capped cells at every dose above 1: how many synthetic records the dosed arms
    trained on, per real record, beside what the planner asked for. A dose multiplies the planned
    (capped) count, so above 1 it lifts the per-cell cap for that run; None where no dose above 1
    ran or no cell was capped."""
    above = sorted({d for d in doses if d > 1})
    capped = plan[plan["capped"]] if "capped" in plan.columns else plan.iloc[:0]
    if not above or capped.empty:
        return None

    def records(count: int, real: int) -> str:
        return f"{count} ({count / real:.1f} per real)" if real else str(count)

    rows, notes = [], []
    for row in capped.to_dict("records"):
        real, planned, asked = int(row["real_count"]), int(row["synthetic_count"]), int(row["requested_count"])
        rows.append([row["cell"].replace("|", ", "), str(real), str(asked), records(planned, real),
                     *(records(dose_count(planned, d), real) for d in above)])
        beyond = [d for d in above if dose_count(planned, d) > asked]
        if beyond:
            notes.append(f"{row['cell'].replace('|', ', ')}: dose {beyond[0]:g} gives more records than the planner "
                         f"asked for ({asked}).")
    return Table("The per-cell cap lifted by the dose: synthetic records of each capped cell that the dosed arms "
                 "trained on", ["cell", "real", "asked for", "planned (the cap)", *(f"dose {d:g}" for d in above)],
                 rows, ["At dose d every dosed arm trains on d times the planned records of each cell; in a cell "
                        "the plan capped, a dose above 1 lifts the cap that many times for this run, so the "
                        "dose-response shows whether more synthetic records of the thin cell help.", *notes])


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
    table = [[label, ", ".join(sorted({str(value) for value in rows[column]}))]
             for column, label in PROVENANCE_COLUMNS.items() if column in rows.columns]
    return Table("How the synthetic records were drawn (from their provenance columns)", ["setting", "value"], table)


# --- the verdict at the top of the page ----------------------------------------------------------


def quality_verdict(quality: QualityResult) -> list[str]:
    """Plain sentences on how far the synthetic images are from real ones, for the top of the
    report: each metric's verdict rule on its section, in turn (a distance many times its real
    reference, mask fidelity well below it, too few images to tell). Empty when none applies."""
    return [sentence for metric in METRICS for sentence in metric.verdict(quality.section(metric.name))]
