"""`cardiofair fairness`: does a classifier become fairer? Every arm trained over repeats on the
real training split and measured by group on the real test set
(:func:`cardiofair.downstream.fairness.run_experiment`), its result and its printed table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cardiofair.downstream.classifier import ClassifierSettings
from cardiofair.downstream.fairness import run_experiment
from cardiofair.errors import SettingsError
from cardiofair.metrics.group_metrics import MATCHED_TPR, oracle_share_lines, power_sentence, too_small_notes
from cardiofair.report.tables import at_path, headline, with_interval
from cardiofair.results import FairnessResult, PlanResult
from cardiofair.settings import REFERENCE_ARM, FairnessSettings

Result = FairnessResult


def run(settings: FairnessSettings, *, real: str | os.PathLike, out: str | os.PathLike,
        synthetic: str | os.PathLike | None = None, plan: str | os.PathLike | None = None, overwrite: bool = False,
        progress: bool = True) -> FairnessResult:
    """`cardiofair fairness`: the classifier (preset and device as chosen, or picked for the
    machine) and :func:`run_experiment` with the stage's paths."""
    import torch

    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if settings.device == "auto" else settings.device
    if device == "cuda" and not cuda:
        raise SettingsError("device", "is cuda, but torch sees no CUDA GPU")
    preset = ("resnet18" if device == "cuda" else "compact") if settings.preset == "auto" else settings.preset
    classifier = ClassifierSettings.for_preset(preset, max_epochs=settings.epochs, patience=settings.patience,
                                               batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                               device=device)
    return run_experiment(real, out, settings, classifier, synthetic=synthetic,
                          plan=PlanResult.load(plan).plan if plan else None, overwrite=overwrite, progress=progress)


def summary(result: FairnessResult, paths: Any) -> str:
    """The printed comparison table and where the full result is."""
    return (f"{summary_table(result)}\n\nwrote {Path(paths['out']) / FairnessResult.FILE} and per-group tables, "
            f"predictions and learning curves in {paths['out']}")


def summary_table(result: FairnessResult) -> str:
    """The printed summary: per arm, key metrics by the threshold attribute with their test-set
    bootstrap intervals; then each arm's paired differences against ``real`` with the
    t-interval over seeds and the Holm-adjusted p-value."""
    settings = result.settings
    measured = result.arms[REFERENCE_ARM]["attributes"]
    # The threshold attribute's groups, or the first grouping this test set could measure.
    attribute = settings["threshold_attribute"] if settings["threshold_attribute"] in measured else \
        next(iter(measured), None)
    intersection = "&".join(settings["intersection"])
    intersection = intersection if intersection in measured else ""
    reference = measured[attribute]["reference_group"] if attribute else None
    groups = list(measured[attribute]["groups"]) if attribute else []
    test = result.data["splits"]["test"]
    columns = {"balanced acc.": ("overall", "balanced_accuracy"), "AUROC": ("overall", "roc_auc")}
    columns.update({f"TPR {g}": ("attributes", attribute, "groups", g, "true_positive_rate") for g in groups})
    signed = {f"TPR {g}-{reference}": ("attributes", attribute, "groups", g, "true_positive_rate_vs_reference")
              for g in groups if g != reference}
    columns.update(signed)
    if attribute:
        columns[f"eq. odds diff ({attribute})"] = ("attributes", attribute, "gaps", "equalized_odds_difference")
    if intersection:
        columns[f"worst-group BA ({intersection})"] = ("attributes", intersection, "gaps", "balanced_accuracy_group_min")

    first = pd.DataFrame({name: {arm: with_interval(at_path(tree, path), signed=name in signed)
                                 for arm, tree in result.arms.items()} for name, path in columns.items()})
    compared = {name: path for name, path in columns.items() if name == "balanced acc." or name in signed
                or name.startswith(("eq. odds", "worst-group"))}
    for g in groups:
        if g != reference:
            compared[f"AUROC {g}"] = ("attributes", attribute, "groups", g, "roc_auc")
            compared[f"TPR at FPR {settings['matched_fpr']:g} {g}"] = ("attributes", attribute, "groups", g, MATCHED_TPR)
    def differences(trees: dict[str, dict]) -> pd.DataFrame:
        rows = {}
        for arm, tree in trees.items():
            rows[arm] = {}
            for name, path in compared.items():
                entry = at_path(tree, path)
                text = with_interval(entry, "interval", signed=True)
                if entry is not None and entry.get("p_holm") is not None:
                    text += f" p={entry['p_holm']:.3g}"
                rows[arm][f"d {name}"] = text
        return pd.DataFrame(rows).T

    reference_text = f"; reference group for {attribute}: {reference}" if attribute else ""
    data = result.data
    mechanism = data.get("mechanism")
    answer = headline(result)
    lines = [answer[0].upper() + answer[1:]] if answer else []
    lines += [f"Test set: {test['subjects']} real subjects, {test['positives']} with {data['positive_diagnosis']} "
             f"({data['test_set']['source']}); {len(result.seeds)} repeats (seeds {result.seeds[0]}.."
             f"{result.seeds[-1]}){reference_text}.",
             power_sentence(data["test_set"]["power"], settings["threshold_attribute"])]
    if mechanism:
        lines.append(f"Bias scenario of the phantom: {mechanism['scenario']}. {mechanism['description']}")
    lines += ["Mean over repeats [95% bootstrap interval over test subjects]:", first.to_string()]
    lines += [f"Left out: {name} ({reason})" for name, reason in result.data.get("skipped_groupings", {}).items()]
    unknown = {name: entry["excluded_unknown"] for name, entry in result.arms[REFERENCE_ARM]["attributes"].items()
               if entry["excluded_unknown"]}
    lines += too_small_notes(result.arms[REFERENCE_ARM]["attributes"])
    if unknown:
        lines.append("Test subjects of unknown attribute, left out of its groups (not of training or overall "
                     "metrics): " + ", ".join(f"{name} {n}" for name, n in unknown.items()))
    for name, entry in result.arms.items():
        # A post-processing arm says which groups it could not adjust (no validation subjects of a class).
        unadjusted = sorted({f"{group} ({reason})" for run in entry["training"]
                             for group, reason in run.get("groups_left_unadjusted", {}).items()})
        if unadjusted:
            lines.append(f"{name} arm: the plain threshold is kept for " + ", ".join(unadjusted))
    if result.data["excluded_records"]:
        lines.append(f"{result.data['excluded_records']} records of other diagnoses left out (fairness.json: "
                     f"data.excluded_examples)")
    if result.comparisons:
        lines += ["", f"Paired difference against {REFERENCE_ARM!r} over the same seeds "
                  "[95% t-interval over seeds], Holm-adjusted p:", differences(result.comparisons).to_string()]
    if result.versus:
        lines += ["", "Arm against arm, paired over the same seeds [95% t-interval over seeds], Holm-adjusted p over "
                  "the pairs:", differences(result.versus_trees()).to_string()]
    if result.oracle_shares:
        lines += ["", *oracle_share_lines(result.oracle_shares)]
    return "\n".join(lines)
