"""Fairness of a binary classifier by sensitive group, with its uncertainty.

Pure numpy, pandas, scipy and fairlearn (no torch), so it can judge predictions from anywhere.
Per-group tables come from fairlearn's ``MetricFrame`` and keep its names (``balanced_accuracy``,
``true_positive_rate``, ``false_positive_rate``, ``selection_rate``, ``count``, ``roc_auc``).
Two deliberate differences from fairlearn's defaults, because a silent number is worse than none:

- a metric a group cannot have is undefined, never 0: no positives in a group means no true
  positive rate (fairlearn reports 0), and the group's reason says so;
- a gap needs two groups with a defined value: groups without one are left out and listed, and
  with fewer than two left the gap is undefined with the reason (fairlearn reports 0).

Max-min gaps are unsigned, so on a finite test set even a fair classifier shows a positive gap,
and a bootstrap interval of a gap practically never reaches 0. Each group is therefore also
compared with its attribute's reference group (the group with the most positives in the test
set, e.g. men for heart failure) by signed differences, ``<metric>_vs_reference`` (the group's
value minus the reference's): their intervals can be read against zero.

A worst group or a max-min gap decided by a group with one or two positives in test is noise: the
gaps (not the per-group rates) take only groups with at least ``min_group_size`` positives and
as many negatives in test; smaller groups are listed with their counts (``too_small``).

Uncertainty has two sources, reported separately. Training randomness: each arm is repeated
with the same seeds, and a t-interval over repeats (and a paired t-test against the reference
arm over the same seeds) says how much the result depends on the seed. Test sampling: the test
subjects are resampled with replacement (the same resamples for every arm and repeat), and the
percentiles of the repeat-averaged measure say how much it depends on which subjects were
tested. AUROC has no bootstrap interval: it is computed from scores, the resampling works on
decisions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from cardiofair.prompts import UNKNOWN

RATE_METRICS = ("balanced_accuracy", "true_positive_rate", "false_positive_rate", "selection_rate")
GROUP_METRICS = (*RATE_METRICS, "roc_auc", "count")
# fairlearn's names where it has the measure; the last two follow its derived-metric naming
# (``<metric>_group_min``: worst-group balanced accuracy; ``<metric>_difference``: max-min gap).
GAP_MEASURES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "equal_opportunity_ratio",
    "balanced_accuracy_group_min",
    "balanced_accuracy_difference",
)
_GAP_SOURCES = {
    "demographic_parity": ("selection_rate",),
    "equalized_odds": ("true_positive_rate", "false_positive_rate"),
    "equal_opportunity": ("true_positive_rate",),
    "balanced_accuracy": ("balanced_accuracy",),
}
CONFIDENCE = 0.95
# Each group's TPR with its own threshold, set on its validation subjects without the diagnosis
# so that all groups have the same false-positive rate: what the classifier can do for the group
# once the threshold no longer favours the majority's prior (issue: a prior shift moves TPR and
# FPR together, better ranking moves TPR alone).
MATCHED_TPR = "true_positive_rate_at_matched_fpr"


def _roc_auc(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> float:
    # MetricFrame hands every metric the decisions; AUROC needs the scores instead.
    y_true = np.asarray(y_true)
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else math.nan


def _positives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
    return int(np.sum(np.asarray(y_true) == 1))


def _negatives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
    return int(np.sum(np.asarray(y_true) == 0))


def undefined_reason(metric: str, positives: int, negatives: int) -> str | None:
    """Why ``metric`` has no value in a group with these label counts, or None when it has one."""
    needs_positives = metric in ("balanced_accuracy", "true_positive_rate", "roc_auc")
    needs_negatives = metric in ("balanced_accuracy", "false_positive_rate", "roc_auc")
    if needs_positives and positives == 0:
        return "no positives in group"
    if needs_negatives and negatives == 0:
        return "no negatives in group"
    return None


def known_groups(groups: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Which rows have every one of ``columns`` known (a subject with an unknown attribute is
    left out of that attribute's groups, and only of those)."""
    return ~groups[list(columns)].astype(str).eq(UNKNOWN).any(axis=1)


def measurable_groupings(groupings: Mapping[str, Sequence[str]], groups: pd.DataFrame,
                         who: str = "subject") -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """(the groupings with at least one row of every attribute known, the others with the
    reason): an attribute a cohort never records (sex and age in ACDC) has no groups to compare,
    and a grouping over it is left out rather than measured on nobody."""
    kept, skipped = {}, {}
    for name, columns in groupings.items():
        if known_groups(groups, columns).any():
            kept[name] = tuple(columns)
            continue
        missing = [c for c in columns if not known_groups(groups, [c]).any()]
        shown = missing or list(columns)
        skipped[name] = (f"{' and '.join(shown)} unknown for every {who}" if missing else
                         f"no {who} has {' and '.join(shown)} known together")
    return kept, skipped


def group_labels(groups: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One label per row: the attribute's value, or the values joined by ``|`` for an
    intersection (as subgroup cells are written everywhere else)."""
    labels = groups[columns[0]].astype(str)
    # Column by column rather than row by row: a large test cohort is labelled per arm and repeat.
    for column in columns[1:]:
        labels = labels + "|" + groups[column].astype(str)
    return labels


def group_table(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, labels: pd.Series) -> pd.DataFrame:
    """fairlearn ``MetricFrame.by_group`` of :data:`GROUP_METRICS` plus ``positives`` and
    ``negatives``, one row per group; undefined metrics are NaN (see :func:`undefined_reason`)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    metrics = {
        "balanced_accuracy": balanced_accuracy_score,
        "true_positive_rate": true_positive_rate,
        "false_positive_rate": false_positive_rate,
        "selection_rate": selection_rate,
        "roc_auc": _roc_auc,
        "count": count,
        "positives": _positives,
        "negatives": _negatives,
    }
    with warnings.catch_warnings():
        # sklearn warns about single-class groups; those values are replaced by NaN below.
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                            sensitive_features=pd.Series(np.asarray(labels), name="group"),
                            sample_params={"roc_auc": {"scores": np.asarray(y_score, dtype=float)}})
        table = frame.by_group.astype(float)
    for metric in GROUP_METRICS:
        undefined = [undefined_reason(metric, p, n) is not None for p, n in zip(table["positives"], table["negatives"])]
        table.loc[undefined, metric] = math.nan
    table.index = table.index.astype(str)
    return table


def _spread(values: np.ndarray, ratio: bool) -> np.ndarray:
    defined = np.sum(~np.isnan(values), axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        high, low = np.nanmax(values, axis=-1), np.nanmin(values, axis=-1)
        result = np.where(high > 0, low / high, np.nan) if ratio else high - low
    return np.where(defined >= 2, result, np.nan)


def gap_values(rates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every measure of :data:`GAP_MEASURES` from per-group rates (arrays whose last axis is
    the group; NaN marks an undefined group, which is left out)."""
    gaps = {}
    for name, sources in _GAP_SOURCES.items():
        if name == "balanced_accuracy":
            values = np.asarray(rates["balanced_accuracy"], dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                gaps["balanced_accuracy_group_min"] = np.nanmin(values, axis=-1)
            gaps["balanced_accuracy_difference"] = _spread(values, ratio=False)
            continue
        differences = [_spread(np.asarray(rates[s], dtype=float), ratio=False) for s in sources]
        ratios = [_spread(np.asarray(rates[s], dtype=float), ratio=True) for s in sources]
        # Equalized odds is the worse of the TPR and FPR gaps, as in fairlearn's worst_case.
        gaps[f"{name}_difference"] = np.max(differences, axis=0) if len(sources) > 1 else differences[0]
        gaps[f"{name}_ratio"] = np.min(ratios, axis=0) if len(sources) > 1 else ratios[0]
    return gaps


def gap_reason(measure: str, table: pd.DataFrame) -> str | None:
    """Why a gap measure of a group table is undefined, or None when it is defined."""
    sources = next(s for name, s in _GAP_SOURCES.items() if measure.startswith(name))
    for metric in sources:
        values = table[metric]
        if measure.endswith("group_min"):
            if values.notna().sum() == 0:
                return f"no group has a defined {metric}"
            continue
        if values.notna().sum() < 2:
            return f"fewer than two groups with a defined {metric}"
        if measure.endswith("ratio") and values.max() == 0:
            return f"every group has {metric} 0"
    return None


def groups_left_out(measure: str, table: pd.DataFrame) -> list[str]:
    """Groups left out of a gap because their source metric is undefined, with the reason."""
    sources = next(s for name, s in _GAP_SOURCES.items() if measure.startswith(name))
    left = []
    for group, row in table.iterrows():
        for metric in sources:
            reason = undefined_reason(metric, int(row["positives"]), int(row["negatives"]))
            if reason:
                left.append(f"{group} ({reason})")
                break
    return left


def weighted_rates(y_true: np.ndarray, y_pred: np.ndarray, codes: np.ndarray, n_groups: int,
                   weights: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`RATE_METRICS` per group under each row of ``weights`` (shape (B, n): how often
    each subject is drawn), as (B, n_groups) arrays; NaN where a group has no positives or no
    negatives in a draw. With unit weights these equal :func:`group_table`'s."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    onehot = np.eye(n_groups)[np.asarray(codes)]
    weights = np.atleast_2d(np.asarray(weights, dtype=float))

    def total(column: np.ndarray) -> np.ndarray:
        return weights @ (onehot * column[:, None])

    positives, negatives = total(y_true), total(1 - y_true)
    true_positives, false_positives = total(y_true * y_pred), total((1 - y_true) * y_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(positives > 0, true_positives / positives, np.nan)
        fpr = np.where(negatives > 0, false_positives / negatives, np.nan)
        selection = np.where(positives + negatives > 0, (true_positives + false_positives) / (positives + negatives),
                             np.nan)
    return {"balanced_accuracy": (tpr + 1 - fpr) / 2, "true_positive_rate": tpr, "false_positive_rate": fpr,
            "selection_rate": selection}


def matched_fpr_decisions(val_scores: np.ndarray, val_labels: np.ndarray, val_groups: Sequence[str],
                          scores: np.ndarray, groups: Sequence[str], fpr: float) -> tuple[np.ndarray, dict[str, str]]:
    """Decisions on (``scores``, ``groups``) with one threshold per group, the lowest at which at
    most ``fpr`` of the group's validation subjects without the diagnosis are called positive;
    NaN for a group without such validation subjects, listed with the reason."""
    val_scores, val_labels, val_groups = (np.asarray(a) for a in (val_scores, val_labels, val_groups))
    scores, groups = np.asarray(scores, dtype=float), np.asarray(groups)
    decisions = np.full(len(scores), np.nan)
    reasons = {}
    for group in np.unique(groups):
        negatives = np.sort(val_scores[(val_groups == group) & (val_labels == 0)])
        if len(negatives) == 0:
            reasons[str(group)] = "no validation subjects without the diagnosis in the group"
            continue
        # Called positive above the threshold: at most floor(fpr x n) negatives lie above it.
        threshold = negatives[len(negatives) - 1 - int(math.floor(fpr * len(negatives)))]
        here = groups == group
        decisions[here] = (scores[here] > threshold).astype(float)
    return decisions, reasons


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multinomial draw counts: each row is one resample of n subjects with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def t_interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the defined values: a Student t-interval for their mean; the
    bounds are NaN with fewer than two values."""
    x = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half, len(x)


def percentile_interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, defined fraction) of the percentile interval of bootstrap draws; NaN bounds
    when fewer than half the draws are defined (the measure then mostly does not exist)."""
    draws = np.asarray(draws, dtype=float)
    defined = draws[~np.isnan(draws)]
    fraction = len(defined) / len(draws) if len(draws) else 0.0
    if fraction < 0.5:
        return math.nan, math.nan, fraction
    low, high = np.percentile(defined, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high), fraction


# The power a minimum detectable change is quoted at (the usual 80 %).
POWER = 0.8


def detectable_change(positives: Mapping[str, int], reference: str, confidence: float = CONFIDENCE,
                      power: float = POWER) -> dict[str, Any]:
    """What a test set can resolve of the TPR gap between the group with fewest positives and
    ``reference`` (``positives``: per group), before any classifier is trained: the half-width of
    the gap's interval and the minimum detectable change of the gap, with each group's TPR at
    0.5 (the worst case of a binomial variance)."""
    others = sorted((n, g) for g, n in positives.items() if g != reference)
    group = others[0][1] if others else reference
    entry: dict[str, Any] = {"group": group, "reference_group": reference,
                             "positives": {group: positives.get(group, 0), reference: positives.get(reference, 0)},
                             "confidence": confidence, "power": power, "half_width": math.nan,
                             "minimum_detectable_change": math.nan, "reason": None}
    if not others or min(entry["positives"].values()) == 0:
        entry["reason"] = "fewer than two groups with positives in test"
        return entry
    error = math.sqrt(0.25 / entry["positives"][group] + 0.25 / entry["positives"][reference])
    z = stats.norm.ppf(0.5 + confidence / 2)
    entry.update(half_width=float(z * error), minimum_detectable_change=float((z + stats.norm.ppf(power)) * error))
    return entry


def power_sentence(entry: Mapping[str, Any], attribute: str) -> str:
    """:func:`detectable_change`'s figures in one sentence for a reader deciding whether a study
    can answer its question."""
    if "group" not in entry:
        return f"Power: the {attribute} TPR gap cannot be measured on this test set ({entry['reason']})."
    group, reference = entry["group"], entry["reference_group"]
    counts = f"{entry['positives'][group]} positives in {group}, {entry['positives'][reference]} in {reference}"
    if entry.get("reason"):
        return f"Power: the {attribute} TPR gap cannot be measured on this test set ({entry['reason']}; {counts})."
    return (f"Power: with {counts}, this test set measures the TPR gap {group} - {reference} to "
            f"+-{entry['half_width']:.3f} ({entry['confidence']:.0%}, each TPR at 0.5), and a change of it smaller "
            f"than {entry['minimum_detectable_change']:.3f} is within test sampling noise (minimum detectable change "
            f"at {entry['power']:.0%} power).")


def paired_difference(values: Sequence[float | None], reference: Sequence[float | None],
                      confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean difference ``values - reference`` over the pairs (same seeds) where both are
    defined, its t-interval and the two-sided paired t-test p-value."""
    pairs = [(a, b) for a, b in zip(values, reference)
             if a is not None and b is not None and not (math.isnan(a) or math.isnan(b))]
    differences = np.array([a - b for a, b in pairs], dtype=float)
    mean, low, high, n = t_interval(differences, confidence)
    result = {"difference": mean, "interval": [low, high], "p_value": math.nan, "n_pairs": n, "reason": None}
    if n < 2:
        result["reason"] = "fewer than two repeats with both values defined"
    elif np.ptp(differences) <= 1e-12:
        # Equal up to rounding: a t statistic of noise over noise would be meaningless.
        result["reason"] = "the differences do not vary over repeats: no t-test"
    else:
        result["p_value"] = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return result


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (NaN p-values are left out and stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(p, kind="stable") if not math.isnan(p[i])]
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# --- one arm, one repeat ------------------------------------------------------------------------

MeasurePath = tuple[str, ...]


@dataclass
class RepeatResult:
    """Every measure of one arm's repeat: point values with the reason where undefined, and
    the bootstrap draws of those that have them. Keys are paths into the report, e.g.
    ``("attributes", "sex", "groups", "Female", "true_positive_rate")``."""

    values: dict[MeasurePath, float]
    reasons: dict[MeasurePath, str]
    draws: dict[MeasurePath, np.ndarray]
    tables: dict[str, pd.DataFrame]
    left_out: dict[MeasurePath, list[str]]
    # Per attribute: its columns, the subjects left out as unknown, and the reference group.
    descriptions: dict[str, dict[str, Any]]


def reference_group(table: pd.DataFrame) -> str:
    """The group signed differences are taken against: most positives, then largest, then first."""
    order = table.assign(_label=table.index).sort_values(["positives", "count", "_label"],
                                                         ascending=[False, False, True])
    return str(order.index[0])


def reference_groups(test: pd.DataFrame, train: pd.DataFrame, attributes: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Per grouping, the reference group of a test set (``test``: the attribute columns and
    ``label``): the group with most positives in test, and where groups tie (a test cohort
    balanced by design) the one with most positives in ``train``, then the first by name."""
    references = {}
    for name, columns in attributes.items():
        counts = {}
        for role, frame in (("test", test), ("train", train)):
            known = frame[known_groups(frame, columns).to_numpy()]
            counts[role] = known["label"].groupby(group_labels(known, columns)).sum()
        if counts["test"].empty:
            continue
        order = pd.DataFrame({"test": counts["test"], "train": counts["train"]}).fillna(0)
        order = order.loc[counts["test"].index].assign(_label=counts["test"].index)
        references[name] = str(order.sort_values(["test", "train", "_label"], ascending=[False, False, True]).index[0])
    return references


def evaluate_repeat(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, groups: pd.DataFrame,
                    attributes: Mapping[str, Sequence[str]], weights: np.ndarray | None = None,
                    min_group_size: int = 0, references: Mapping[str, str] | None = None,
                    matched: Mapping[str, tuple[np.ndarray, Mapping[str, str]]] | None = None) -> RepeatResult:
    """Overall metrics, and per attribute (or intersection) the group table and the gaps of one
    set of predictions; with ``weights`` (see :func:`bootstrap_weights`) also their bootstrap draws.
    Gaps leave out groups with fewer than ``min_group_size`` positives or negatives. Signed
    differences are taken against ``references`` (per grouping) where given, else against
    :func:`reference_group`. ``matched`` holds per grouping the decisions at a matched
    false-positive rate and the groups without one (:func:`matched_fpr_decisions`): each group's
    :data:`MATCHED_TPR`."""
    y_true, y_pred, y_score = (np.asarray(a) for a in (y_true, y_pred, y_score))
    result = RepeatResult({}, {}, {}, {}, {}, {})
    everyone = pd.Series(["all"] * len(y_true), index=groups.index)
    blocks = [(("overall",), everyone, np.ones(len(y_true), bool))]
    for name, columns in attributes.items():
        known = known_groups(groups, columns).to_numpy()
        result.descriptions[name] = {"columns": list(columns), "excluded_unknown": int((~known).sum())}
        blocks.append((("attributes", name), group_labels(groups, columns), known))
    for prefix, labels, keep in blocks:
        table = group_table(y_true[keep], y_pred[keep], y_score[keep], labels[keep])
        draws = {}
        if weights is not None:
            codes = pd.Categorical(labels[keep], categories=table.index).codes
            draws = weighted_rates(y_true[keep], y_pred[keep], codes, len(table), weights[:, keep])
        result.tables[prefix[-1]] = table
        if prefix == ("overall",):
            for metric in GROUP_METRICS:
                _put(result, prefix + (metric,), table.at["all", metric], _reason(table, "all", metric),
                     draws[metric][:, 0] if metric in draws else None)
        else:
            reference = (references or {}).get(prefix[-1])
            _record_groups(result, prefix, table, draws, reference if reference in table.index else None)
            _record_gaps(result, prefix, table, draws, min_group_size)
            if prefix[-1] in (matched or {}):
                decisions, reasons = matched[prefix[-1]]
                _record_matched(result, prefix, table, y_true[keep], np.asarray(decisions)[keep], labels[keep],
                                reasons, None if weights is None else weights[:, keep])
    return result


def _record_matched(result: RepeatResult, prefix: MeasurePath, table: pd.DataFrame, y_true: np.ndarray,
                    decisions: np.ndarray, labels: pd.Series, reasons: Mapping[str, str],
                    weights: np.ndarray | None) -> None:
    codes = pd.Categorical(labels, categories=table.index).codes
    defined = np.nan_to_num(decisions)
    point = weighted_rates(y_true, defined, codes, len(table), np.ones((1, len(y_true))))["true_positive_rate"][0]
    draws = None if weights is None else weighted_rates(y_true, defined, codes, len(table),
                                                        weights)["true_positive_rate"]
    reference = result.descriptions[prefix[-1]]["reference_group"]
    at = {group: i for i, group in enumerate(table.index)}
    # A group without a threshold has no decisions to count.
    unset = [at[group] for group in reasons if group in at]
    point[unset] = math.nan
    if draws is not None:
        draws[:, unset] = math.nan

    def why(group: str) -> str | None:
        return reasons.get(group) or _reason(table, group, "true_positive_rate")

    for group in table.index:
        _put(result, prefix + ("groups", group, MATCHED_TPR), point[at[group]], why(group),
             None if draws is None else draws[:, at[group]])
        if group == reference:
            continue
        reason = why(group) or (why(reference) and f"reference group: {why(reference)}")
        _put(result, prefix + ("groups", group, f"{MATCHED_TPR}_vs_reference"), point[at[group]] - point[at[reference]],
             reason, None if draws is None else draws[:, at[group]] - draws[:, at[reference]])


def _reason(table: pd.DataFrame, group: str, metric: str) -> str | None:
    return undefined_reason(metric, int(table.at[group, "positives"]), int(table.at[group, "negatives"]))


def _record_groups(result: RepeatResult, prefix: MeasurePath, table: pd.DataFrame,
                   draws: Mapping[str, np.ndarray], reference: str | None) -> None:
    reference = reference or reference_group(table)
    result.descriptions[prefix[-1]]["reference_group"] = reference
    at = {group: i for i, group in enumerate(table.index)}
    for group in table.index:
        for metric in (*GROUP_METRICS, "positives", "negatives"):
            _put(result, prefix + ("groups", group, metric), table.at[group, metric], _reason(table, group, metric),
                 draws[metric][:, at[group]] if metric in draws else None)
        if group == reference:
            continue
        for metric in RATE_METRICS:
            reference_reason = _reason(table, reference, metric)
            reason = _reason(table, group, metric) or (reference_reason and f"reference group: {reference_reason}")
            _put(result, prefix + ("groups", group, f"{metric}_vs_reference"),
                 table.at[group, metric] - table.at[reference, metric], reason,
                 draws[metric][:, at[group]] - draws[metric][:, at[reference]] if draws else None)


def too_small(table: pd.DataFrame, min_group_size: int) -> dict[str, dict[str, int]]:
    """The groups of a group table with fewer than ``min_group_size`` positives or negatives,
    with their counts."""
    small = (table["positives"] < min_group_size) | (table["negatives"] < min_group_size)
    return {str(g): {"positives": int(table.at[g, "positives"]), "negatives": int(table.at[g, "negatives"])}
            for g in table.index[small.to_numpy()]}


def too_small_notes(attributes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per grouping of a report's ``attributes`` whose small groups were left out of
    its gaps, with their counts."""
    lines = []
    for name, entry in attributes.items():
        small = entry.get("too_small") or {}
        if small:
            counts = ", ".join(f"{g} ({c['positives']} pos., {c['negatives']} neg.)" for g, c in small.items())
            lines.append(f"Too small for {name} gaps and worst-group figures (fewer than {entry['min_group_size']} "
                         f"positives or negatives in test): {counts}")
    return lines


def _record_gaps(result: RepeatResult, prefix: MeasurePath, table: pd.DataFrame,
                 draws: Mapping[str, np.ndarray], min_group_size: int) -> None:
    small = too_small(table, min_group_size)
    result.descriptions[prefix[-1]].update(min_group_size=min_group_size, too_small=small)
    keep = ~table.index.isin(list(small))
    eligible = table[keep]
    # With no group left, every gap is undefined (numpy's min of nothing is an error).
    point = gap_values({m: eligible[m].to_numpy() for m in RATE_METRICS}) if len(eligible) else \
        dict.fromkeys(GAP_MEASURES, math.nan)
    boot = gap_values({m: values[:, keep] for m, values in draws.items()}) if draws and len(eligible) else {}
    small_note = [f"{g} (too small: {c['positives']} positives, {c['negatives']} negatives; needs "
                  f"{min_group_size} of each)" for g, c in small.items()]
    for measure in GAP_MEASURES:
        path = prefix + ("gaps", measure)
        reason = gap_reason(measure, eligible) if len(eligible) else "no group is large enough"
        if reason and small:
            reason += f" ({len(small)} group(s) with fewer than {min_group_size} positives or negatives left out)"
        _put(result, path, float(point[measure]), reason, boot.get(measure))
        left = small_note + groups_left_out(measure, eligible)
        if left:
            result.left_out[path] = left


def _put(result: RepeatResult, path: MeasurePath, value: float, reason: str | None, draws: np.ndarray | None) -> None:
    result.values[path] = float(value)
    if reason is not None and math.isnan(float(value)):
        result.reasons[path] = reason
    if draws is not None:
        result.draws[path] = np.asarray(draws, dtype=float)


# --- arms x repeats -----------------------------------------------------------------------------

# The measures compared between arms: the headline numbers, not every group's rate (those are
# in the per-group tables with their intervals).
COMPARED_OVERALL = ("balanced_accuracy", "roc_auc", "true_positive_rate", "false_positive_rate")
# A group's AUROC is threshold-free: its change is what new data taught the classifier about the
# group, apart from where the threshold falls (a prior shift moves TPR and FPR together).
COMPARED_GROUP = ("true_positive_rate_vs_reference", "false_positive_rate_vs_reference", "roc_auc", MATCHED_TPR,
                  f"{MATCHED_TPR}_vs_reference")


def compared_paths(paths: Iterable[MeasurePath]) -> list[MeasurePath]:
    """The paths a paired comparison covers: overall metrics, every attribute's gaps, and each
    group's signed TPR and FPR differences to its reference group and its AUROC."""
    return [p for p in paths if (p[0] == "overall" and p[1] in COMPARED_OVERALL) or (len(p) == 4 and p[2] == "gaps")
            or (len(p) == 5 and p[4] in COMPARED_GROUP)]


def _nanmean(stacked: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stacked, axis=0)


def summarise_measure(repeats: Sequence[RepeatResult], path: MeasurePath) -> dict[str, Any]:
    """The report entry of one measure over repeats: mean, t-interval over repeats, bootstrap
    interval on the test set, per-repeat values, and the reason where some are undefined."""
    values = [r.values.get(path, math.nan) for r in repeats]
    mean, low, high, n = t_interval(values)
    entry: dict[str, Any] = {"mean": mean, "interval": [low, high], "bootstrap_interval": [math.nan, math.nan],
                             "values": values, "n_defined": n, "reason": None}
    if all(path in r.draws for r in repeats):
        b_low, b_high, fraction = percentile_interval(_nanmean(np.stack([r.draws[path] for r in repeats])))
        entry["bootstrap_interval"], entry["bootstrap_defined"] = [b_low, b_high], fraction
    reasons = sorted({r.reasons[path] for r in repeats if path in r.reasons})
    if reasons:
        entry["reason"] = "; ".join(reasons) + ("" if n == 0 else f" (in {len(values) - n} of {len(values)} repeats)")
    left = sorted({g for r in repeats for g in r.left_out.get(path, [])})
    if left:
        entry["groups_left_out"] = left
    return entry


def _nest(tree: dict, path: MeasurePath, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def summarise_arms(results: Mapping[str, Sequence[RepeatResult]], reference: str = "real") -> tuple[dict, dict]:
    """(arms, comparisons) of the report. ``arms[arm]`` nests every measure's summary by its
    path, with each attribute's ``columns``, ``excluded_unknown`` and ``reference_group``;
    ``comparisons[arm]`` is :func:`compare_arms` of each arm other than ``reference`` against it."""
    arms: dict[str, dict] = {}
    for arm, repeats in results.items():
        tree: dict = {"attributes": {name: dict(d) for name, d in repeats[0].descriptions.items()}}
        for path in repeats[0].values:
            _nest(tree, path, summarise_measure(repeats, path))
        arms[arm] = tree
    if reference not in results:
        return arms, {}
    pairs = [(arm, reference) for arm in results if arm != reference]
    return arms, {arm: tree for (arm, _), tree in zip(pairs, compare_arms(results, pairs))}


def compare_arms(results: Mapping[str, Sequence[RepeatResult]], pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """For each (arm, other) pair, the tree of each compared measure's paired difference arm minus
    other over the same seeds, its t-interval, the bootstrap interval of the difference of
    repeat means (same test resamples), and the p-value before and after Holm's correction over
    the pairs compared on that measure."""
    trees: list[dict] = [{} for _ in pairs]
    if not pairs:
        return trees
    for path in compared_paths(results[pairs[0][1]][0].values):
        entries = []
        for arm, other in pairs:
            mine, theirs = results[arm], results[other]
            entry = paired_difference([r.values.get(path, math.nan) for r in mine],
                                      [r.values.get(path, math.nan) for r in theirs])
            entry["bootstrap_interval"] = [math.nan, math.nan]
            if all(path in r.draws for r in (*mine, *theirs)):
                difference = _nanmean(np.stack([r.draws[path] for r in mine])) - \
                    _nanmean(np.stack([r.draws[path] for r in theirs]))
                entry["bootstrap_interval"] = list(percentile_interval(difference)[:2])
            entries.append(entry)
        for tree, entry, adjusted in zip(trees, entries, holm([e["p_value"] for e in entries])):
            entry["p_holm"] = adjusted
            _nest(tree, path, entry)
    return trees


def share_of_oracle(arm: Sequence[RepeatResult], oracle: Sequence[RepeatResult], reference: Sequence[RepeatResult],
                    path: MeasurePath, seed: int, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``arm``'s mean paired change of the measure at ``path`` against ``reference`` as a share of
    ``oracle``'s change over the same seeds. The interval resamples both sources of uncertainty
    at once: the seeds (with replacement, the same for all three arms) and the test subjects
    (the bootstrap draws each repeat carries)."""
    values = {name: np.array([r.values.get(path, math.nan) for r in results], dtype=float)
              for name, results in (("arm", arm), ("oracle", oracle), ("reference", reference))}
    change, ceiling = (paired_difference(values[k], values["reference"])["difference"] for k in ("arm", "oracle"))
    entry: dict[str, Any] = {"share": change / ceiling if ceiling else math.nan, "change": change,
                             "oracle_change": ceiling, "interval": [math.nan, math.nan], "reason": None}
    if math.isnan(ceiling) or math.isnan(change):
        entry["reason"] = "the measure is undefined in every repeat"
        return entry
    if not ceiling:
        entry["reason"] = "the oracle does not change the measure: there is nothing to take a share of"
        return entry
    if all(path in r.draws for r in (*arm, *oracle, *reference)):
        draws = {name: np.stack([r.draws[path] for r in results])
                 for name, results in (("arm", arm), ("oracle", oracle), ("reference", reference))}
        n_repeats, n_boot = draws["arm"].shape
        rows = np.random.default_rng(seed).integers(0, n_repeats, size=(n_repeats, n_boot))
        columns = np.arange(n_boot)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            numerator, denominator = (np.nanmean((draws[k] - draws["reference"])[rows, columns], axis=0)
                                      for k in ("arm", "oracle"))
            low, high, _ = percentile_interval(numerator / denominator, confidence)
        entry["interval"] = [low, high]
        oracle_low, oracle_high, _ = percentile_interval(denominator, confidence)
        if oracle_low <= 0 <= oracle_high:
            entry["reason"] = "the oracle's own change is not distinguishable from zero, so its share is not either"
    return entry


def oracle_share_lines(shares: Mapping[str, Any]) -> list[str]:
    """The report's ``oracle_shares`` as lines: each arm's change of the main gap as a share of
    the oracle's, with its interval and, where the share means little, why (JSON ``null`` or NaN
    for what is undefined)."""

    def undefined(value: float | None) -> bool:
        return value is None or math.isnan(value)

    lines = [f"Change of {shares['measure']} as a share of the oracle's change at the same dose "
             f"[95% interval over seeds and test subjects]:"]
    for arm, entry in shares["arms"].items():
        low, high = entry["interval"]
        interval = "" if undefined(low) or undefined(high) else f" [{low:.0%}, {high:.0%}]"
        share = "undefined" if undefined(entry["share"]) else f"{entry['share']:.0%}"
        note = f" ({entry['reason']})" if entry["reason"] else ""
        oracle = entry.get("oracle_arm", "oracle")
        ceiling = "" if undefined(entry["oracle_change"]) else f" {entry['oracle_change']:+.3f}"
        lines.append(f"  {arm}: {entry['change']:+.3f}, {share} of the {oracle} arm's{ceiling}{interval}{note}")
    return lines
