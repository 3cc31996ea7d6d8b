"""The fairness stage: every arm with the same seeds on the same split, and the fairness report.

Repeat r of every arm trains with seed ``seed + r``, validates on the real validation subjects
(early stopping, threshold) and predicts the real test subjects; a subject with several slices
gets the mean score of its slices. The ``threshold`` arm post-processes the ``real`` arm's
model of the same repeat. Then :mod:`cardiofair.metrics.group_metrics` turns the predictions into
per-group metrics, gaps, intervals and paired comparisons against ``real``.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from cardiofair import __version__
from cardiofair.data.prepare import phantom_model
from cardiofair.data.records import read_manifest
from cardiofair.data.split import HELD_BACK
from cardiofair.downstream.arms import (
    CELLS,
    ORACLE,
    ORACLE_ARM,
    SYNTHETIC,
    Arm,
    ArmDose,
    arm_doses,
    chosen_arms,
    training_set,
    versus_pairs,
)
from cardiofair.downstream.classifier import ClassifierSettings, predict, train_classifier, youden_threshold
from cardiofair.downstream.cohort import SENSITIVE, Cohort, ExperimentError, load_cohort, planned_cells, with_records
from cardiofair.downstream.fresh import balanced_cells, draw_fresh, draw_oracle
from cardiofair.errors import OutputExistsError
from cardiofair.io import StagingDirectory, atomic_write, json_ready
from cardiofair.metrics.group_metrics import (
    RepeatResult,
    bootstrap_weights,
    compare_arms,
    detectable_change,
    evaluate_repeat,
    group_labels,
    matched_fpr_decisions,
    measurable_groupings,
    reference_groups,
    share_of_oracle,
    summarise_arms,
)
from cardiofair.options import plain
from cardiofair.prompts import UNKNOWN
from cardiofair.results import FairnessResult
from cardiofair.settings import REFERENCE_ARM, FairnessSettings
from cardiofair.threads import one_thread_per_worker, side_by_side


@dataclass
class RunResult:
    """One arm's repeat: test predictions per subject and what training did."""

    predictions: pd.DataFrame
    val_scores: np.ndarray
    info: dict[str, Any]
    history: list[dict] = field(default_factory=list)


def run_experiment(real: str | os.PathLike, out: str | os.PathLike, settings: FairnessSettings,
                   classifier: ClassifierSettings, synthetic: str | os.PathLike | None = None,
                   plan: pd.DataFrame | None = None, overwrite: bool = False, progress: bool = True) -> FairnessResult:
    """Train and evaluate every arm x repeat with ``classifier``; write the result to ``out``; return it.

    ``out`` gets ``fairness.json``, ``predictions.csv``, ``groups.csv``, ``groups_by_repeat.csv``,
    ``gaps.csv``, ``comparisons.csv`` and ``training.csv``, all at once: the directory is built
    under a temporary name and renamed into place, so an interrupted run leaves the old one.
    A grouping no test subject can be placed in (its attribute is unknown for all of them, as
    sex and age in ACDC) is left out with the reason, in the report and the printed table.
    """
    out = Path(out)
    # Checked again when writing; failing now spares the training.
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    model = phantom_model(real)
    held_back = HELD_BACK in set(read_manifest(real).get("split", pd.Series(dtype=str)).astype(str))
    arms = chosen_arms(settings.arms, synthetic is not None, model is not None or held_back)
    missing = [a.name for a in arms if SYNTHETIC in a.needs] if synthetic is None else []
    if missing:
        raise ExperimentError(f"arm(s) {missing} need a synthetic dataset (--synthetic)")
    oracle = [a.name for a in arms if ORACLE in a.needs]
    if oracle and model is None and not held_back:
        raise ExperimentError(f"arm(s) {oracle} need what a perfect generator would add: fresh subjects drawn from "
                              f"a phantom cohort's model, or real subjects held back from the generator, and {real} "
                              f"is not a phantom cohort and holds none back: split it with `cardiofair split "
                              f"--scarcity` (the scarcity protocol), or leave them out of --arms")
    with tqdm(unit="record", desc="load", disable=not progress) as loading:
        cohort = load_cohort(real, synthetic, settings.positive_diagnosis, settings.train_prevalence, settings.seed,
                             on_record=loading.update, positive_name=settings.positive_name)
    test_set: dict[str, Any] = {"source": "the real dataset's test split"}
    if settings.phantom_test_subjects is not None:
        if model is None:
            raise ExperimentError(f"phantom_test_subjects draws a test cohort from the phantom model a dataset was "
                                  f"prepared with, and {real} is not a phantom cohort: leave it unset")
        drawn = draw_fresh(model, balanced_cells(model.config, settings.phantom_test_subjects), "test")
        cohort = with_records(cohort, drawn, "test", replace_role=True)
        test_set = {"source": "fresh phantom subjects of the real dataset's phantom model (random stream 'test'), "
                              "balanced over sex x age decade x diagnosis", "subjects": settings.phantom_test_subjects}
    test = cohort.subjects("test")
    groups = test[list(SENSITIVE)]
    groupings, skipped = measurable_groupings(settings.groupings(), groups, "test subject")
    references = reference_groups(test, cohort.subjects("train"), groupings)
    test_set["power"] = _power(test, settings.threshold_attribute, references)
    cells = planned_cells(cohort, plan) if any(CELLS in a.needs for a in arms) else None
    oracle_source = None
    if oracle and held_back:
        # The scarcity protocol: the subjects the generator never saw are the perfect generator's records.
        cohort.table.loc[cohort.table["role"] == HELD_BACK, "role"] = "oracle"
        oracle_source = f"{len(cohort.subjects('oracle'))} real training subjects held back by the split (scarcity)"
    elif oracle:
        cohort = with_records(cohort, draw_oracle(model, cells, max(settings.doses)), "oracle")
        oracle_source = "fresh phantom subjects of the planned cells (random stream 'oracle')"
    # Held-back subjects are as many as the split held back: they make no other dose.
    doses = tuple(d for d in arm_doses(arms, settings.doses) if not (held_back and ORACLE in d.arm.needs
                                                                         and d.dose != 1.0))
    pairs = versus_pairs(settings.versus, [d.name for d in doses])
    trained = [d for d in doses if d.arm.build is not None]
    runs: dict[str, list[RunResult]] = {}
    for arm in trained:
        # Fails now, before any training, when a dose asks for records the synthetic set lacks.
        training_set(arm, cohort, settings.seed, cells)
    total = sum(d.arm.trainings for d in trained) * settings.repeats * classifier.max_epochs
    jobs = [(arm, seed) for arm in trained for seed in settings.seeds]

    def train(job: tuple[ArmDose, int]) -> RunResult:
        arm, seed = job
        run = _train_arm(arm, cohort, cells, seed, classifier, bar)
        bar.update(classifier.max_epochs * arm.arm.trainings - run.info["epochs_run"])
        return run

    with tqdm(total=total, unit="epoch", desc="fairness", disable=not progress) as bar:
        done = side_by_side(train, jobs, workers=None if classifier.device == "cpu" else 1)
    for (arm, _), run in zip(jobs, done):
        runs.setdefault(arm.name, []).append(run)
    for arm in doses:
        if arm.arm.post_process is not None:
            runs[arm.name] = [_post_process(arm.arm, run, cohort, settings, seed)
                              for run, seed in zip(runs[REFERENCE_ARM], settings.seeds)]
    runs = {arm.name: runs[arm.name] for arm in doses}
    shared = {"groups": groups, "attributes": groupings, "references": references,
              "weights": bootstrap_weights(len(test), settings.bootstrap, settings.seed),
              "min_group_size": settings.min_group_size}
    matched = _matched_decisions(doses, runs, cohort, groupings, settings.matched_fpr)
    evaluated = iter(evaluate_runs([run.predictions for arm_runs in runs.values() for run in arm_runs], shared,
                                   progress, matched=[m for arm_matched in matched.values() for m in arm_matched]))
    results = {arm: [next(evaluated) for _ in arm_runs] for arm, arm_runs in runs.items()}
    resolved = {**plain(settings), "arms": list(runs), "classifier": asdict(classifier)}
    report = _report(cohort, doses, runs, results, cells, resolved, skipped, real, synthetic)
    report["data"]["test_set"] = test_set
    report["data"]["oracle_source"] = oracle_source
    report["data"]["mechanism"] = model.mechanism if model else None
    if ORACLE_ARM in results and settings.threshold_attribute in groupings:
        report["oracle_shares"] = _oracle_shares(doses, results, test_set["power"], settings)
    report["versus"] = [{"arm": arm, "other": other, "comparisons": tree}
                        for (arm, other), tree in zip(pairs, compare_arms(results, pairs))]
    result = FairnessResult.from_dict(json_ready(report))
    _write(out, result, _tables(report, runs, results, groups, settings), overwrite)
    return result


# What every evaluation shares (test groups, bootstrap weights), handed to each worker process
# once when it starts rather than pickled with every run.
_SHARED: dict[str, Any] = {}


def _share(shared: dict[str, Any]) -> None:
    one_thread_per_worker()
    _SHARED.update(shared)


def _evaluate(predictions: pd.DataFrame, matched: dict[str, Any] | None = None,
              shared: dict[str, Any] | None = None) -> RepeatResult:
    shared = _SHARED if shared is None else shared
    return evaluate_repeat(predictions["label"], predictions["prediction"], predictions["score"], shared["groups"],
                           shared["attributes"], shared["weights"], shared["min_group_size"], shared["references"],
                           matched)


def evaluate_runs(predictions: list[pd.DataFrame], shared: dict[str, Any], progress: bool = False,
                  workers: int | None = None, matched: list[dict[str, Any]] | None = None) -> list[RepeatResult]:
    """:func:`evaluate_repeat` of each run's test predictions, in order; ``shared`` holds its other
    arguments (``groups``, ``attributes``, ``weights``, ``min_group_size``, ``references``) and
    ``matched`` each run's decisions at a matched false-positive rate per grouping.

    The group tables are fairlearn MetricFrames, pandas work that holds the GIL, so threads would
    run them one at a time: they run in up to ``workers`` processes (default one per core, at most
    8), each on one thread (:func:`~cardiofair.threads.one_thread_per_worker`): the default
    study's 50 runs took 13.3 s in two processes and 26 s in one (Intel Xeon host, 2 cores).
    Each result is the same computation wherever it runs."""
    workers = max(1, min(workers or os.cpu_count() or 1, 8, len(predictions)))
    matched = matched or [None] * len(predictions)
    results = []
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(predictions), unit="run", desc="fairness metrics",
                                       disable=not progress))
        if workers == 1:
            done = (_evaluate(p, m, shared) for p, m in zip(predictions, matched))
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=_share, initargs=(shared,)))
            done = pool.map(_evaluate, predictions, matched)
        for result in done:
            results.append(result)
            bar.update()
    return results


def _matched_decisions(doses: tuple[ArmDose, ...], runs: dict[str, list[RunResult]], cohort: Cohort,
                       groupings: dict[str, tuple[str, ...]], fpr: float) -> dict[str, list[dict[str, Any]]]:
    """Per arm and repeat, per grouping, the test decisions with each group's threshold at ``fpr``
    on its validation subjects (:func:`matched_fpr_decisions`). A post-processing arm changes
    decisions, not its model's scores: it takes its reference run's."""
    val, test = cohort.subjects("val"), cohort.subjects("test")
    labels = {name: (group_labels(val, columns), group_labels(test, columns)) for name, columns in groupings.items()}
    found: dict[str, list[dict[str, Any]]] = {}
    for arm in sorted(doses, key=lambda d: d.arm.post_process is not None):
        if arm.arm.post_process is not None:
            found[arm.name] = found[REFERENCE_ARM]
            continue
        found[arm.name] = [{name: matched_fpr_decisions(run.val_scores, val["label"], val_groups,
                                                   run.predictions["score"], test_groups, fpr)
                       for name, (val_groups, test_groups) in labels.items()} for run in runs[arm.name]]
    return {arm: found[arm] for arm in runs}


def _power(test: pd.DataFrame, attribute: str, references: dict[str, str]) -> dict[str, Any]:
    """:func:`detectable_change` of the threshold attribute's TPR gap on these test subjects."""
    if attribute not in references:
        return {"reason": f"{attribute} unknown for every test subject"}
    known = test[test[attribute].astype(str) != UNKNOWN]
    positives = known.groupby(attribute)["label"].sum()
    return detectable_change({str(g): int(n) for g, n in positives.items()}, references[attribute])


def _oracle_shares(doses: tuple[ArmDose, ...], results: dict[str, list[RepeatResult]], power: dict[str, Any],
                   settings: FairnessSettings) -> dict[str, Any]:
    """Each arm's change of the main gap (the TPR of the group with fewest positives minus the
    reference group's) as a share of the oracle's."""
    path = ("attributes", settings.threshold_attribute, "groups", power["group"], "true_positive_rate_vs_reference")
    ceiling = {d.dose: d.name for d in doses if d.arm.name == ORACLE_ARM}
    # An arm at a dose is measured against the oracle at that dose: the same records' worth.
    oracle = {d.name: ceiling.get(d.dose) for d in doses if d.arm.name not in (REFERENCE_ARM, ORACLE_ARM)}
    return {"measure": f"TPR {power['group']} - {power['reference_group']}", "path": list(path),
            "arms": {arm: {**share_of_oracle(results[arm], results[reference], results[REFERENCE_ARM], path,
                                             settings.seed), "oracle_arm": reference}
                     for arm, reference in oracle.items() if reference in results}}


def subject_scores(cohort: Cohort, role: str, record_scores: np.ndarray) -> np.ndarray:
    """The mean score of each subject's records, in the order of ``cohort.subjects(role)``."""
    subjects = cohort.table.iloc[cohort.rows(role)]["subject_id"].to_numpy()
    means = pd.Series(record_scores, index=subjects).groupby(level=0).mean()
    return means.reindex(cohort.subjects(role).index).to_numpy()


def _train_arm(arm: ArmDose, cohort: Cohort, cells: pd.DataFrame | None, seed: int, classifier: ClassifierSettings,
               bar: tqdm) -> RunResult:
    chosen = training_set(arm, cohort, seed, cells)
    labels, images = cohort.table["label"].to_numpy(), cohort.records.images
    val_rows, test_rows = cohort.rows("val"), cohort.rows("test")
    pretrained, pretrain_epochs = None, 0
    if chosen.pretrain is not None:
        first = train_classifier(images[chosen.pretrain], labels[chosen.pretrain], images[val_rows], labels[val_rows],
                                 classifier, seed, on_epoch=lambda record: bar.update(1))
        pretrained, pretrain_epochs = first.model, len(first.history)
    trained = train_classifier(images[chosen.rows], labels[chosen.rows], images[val_rows], labels[val_rows],
                               classifier, seed, chosen.weights, on_epoch=lambda record: bar.update(1),
                               groups=chosen.groups, start=pretrained)
    device = classifier.device
    val_scores = subject_scores(cohort, "val", predict(trained.model, cohort.records.images[val_rows], device))
    threshold = youden_threshold(cohort.subjects("val")["label"].to_numpy(), val_scores)
    scores = subject_scores(cohort, "test", predict(trained.model, cohort.records.images[test_rows], device))
    info = {**chosen.info, "seed": seed, "best_epoch": trained.best_epoch,
            "epochs_run": len(trained.history) + pretrain_epochs,
            "val_roc_auc": trained.history[trained.best_epoch - 1]["val_roc_auc"], "threshold": threshold}
    return RunResult(_predictions(cohort, scores, (scores >= threshold).astype(int)), val_scores, info,
                     trained.history)


def _post_process(arm: Arm, run: RunResult, cohort: Cohort, settings: FairnessSettings, seed: int) -> RunResult:
    scores, decisions, info = arm.post_process(cohort, run.val_scores, run.predictions["score"].to_numpy(),
                                               run.info["threshold"], settings, seed)
    return RunResult(_predictions(cohort, scores, decisions), run.val_scores, {"seed": seed, **info})


def _predictions(cohort: Cohort, scores: np.ndarray, decisions: np.ndarray) -> pd.DataFrame:
    test = cohort.subjects("test")
    return pd.DataFrame({"label": test["label"].to_numpy(), "score": scores, "prediction": decisions},
                        index=test.index)


def _report(cohort: Cohort, doses: tuple[ArmDose, ...], runs: dict[str, list[RunResult]],
            results: dict[str, list[RepeatResult]], cells: pd.DataFrame | None, settings: dict[str, Any],
            skipped: dict[str, str], real: str | os.PathLike, synthetic: str | os.PathLike | None) -> dict:
    arms, comparisons = summarise_arms(results, REFERENCE_ARM)
    for arm in doses:
        arms[arm.name] = {"arm": arm.arm.name, "dose": arm.dose, "training": [run.info for run in runs[arm.name]],
                          **arms[arm.name]}
    subjects = {role: {"subjects": len(cohort.subjects(role)), "positives": int(cohort.subjects(role)["label"].sum())}
                for role in ("train", "val", "test", "synthetic", "oracle")}
    data = {"real": str(real), "synthetic": None if synthetic is None else str(synthetic),
            "positive_diagnosis": cohort.positive_name, "positive_diagnoses": list(cohort.positive),
            "skipped_groupings": skipped, "splits": subjects, "excluded_records": len(cohort.excluded),
            "excluded_examples": cohort.excluded[:20], **cohort.info}
    if cells is not None:
        data["planned_cells"] = {"source": str(cells["source"].iloc[0]) if len(cells) else None,
                                 "cells": cells.drop(columns="source").to_dict("records")}
    return {"schema": FairnessResult.SCHEMA, "cardiofair_version": __version__, "settings": settings,
            "reference_arm": REFERENCE_ARM, "seeds": [settings["seed"] + r for r in range(settings["repeats"])], "data": data, "arms": arms,
            "comparisons": comparisons}


# --- files --------------------------------------------------------------------------------------


def _entries(tree: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every summary (has ``mean``) or comparison (has ``difference``) in a report tree."""
    for key, value in tree.items():
        if isinstance(value, dict):
            if "mean" in value or "difference" in value:
                yield path + (key,), value
            else:
                yield from _entries(value, path + (key,))


def _where(path: tuple[str, ...]) -> dict[str, str]:
    # ("overall", m) | ("attributes", a, "gaps", m) | ("attributes", a, "groups", g, m)
    if path[0] == "overall":
        return {"attribute": "overall", "group": "", "measure": path[1]}
    return {"attribute": path[1], "group": path[3] if path[2] == "groups" else "", "measure": path[-1]}


def _interval_columns(entry: dict) -> dict[str, Any]:
    return {"interval_low": entry["interval"][0], "interval_high": entry["interval"][1],
            "bootstrap_low": entry["bootstrap_interval"][0], "bootstrap_high": entry["bootstrap_interval"][1]}


def _tables(report: dict, runs: dict[str, list[RunResult]], results: dict[str, list[RepeatResult]],
            groups: pd.DataFrame, settings: FairnessSettings) -> dict[str, pd.DataFrame]:
    """The CSV files: summaries over repeats per group (groups.csv) and per attribute (gaps.csv),
    paired comparisons, fairlearn's per-group tables of every repeat, predictions, learning curves."""
    summary_rows, comparison_rows, by_repeat, predictions, training = [], [], [], [], []
    for arm, tree in report["arms"].items():
        for path, entry in _entries({k: v for k, v in tree.items() if k != "training"}):
            summary_rows.append({"arm": arm, **_where(path), "mean": entry["mean"], **_interval_columns(entry),
                                 "n_defined": entry["n_defined"], "reason": entry["reason"]})
    compared = [(arm, REFERENCE_ARM, tree) for arm, tree in report["comparisons"].items()]
    compared += [(pair["arm"], pair["other"], pair["comparisons"]) for pair in report.get("versus", [])]
    for arm, other, tree in compared:
        for path, entry in _entries(tree):
            comparison_rows.append({"arm": arm, "reference": other, **_where(path),
                                    "difference": entry["difference"], **_interval_columns(entry),
                                    "p_value": entry["p_value"], "p_holm": entry["p_holm"],
                                    "n_pairs": entry["n_pairs"], "reason": entry["reason"]})
    for arm, arm_results in results.items():
        for repeat, (result, seed) in enumerate(zip(arm_results, settings.seeds)):
            for grouping, table in result.tables.items():
                by_repeat.append(table.reset_index().assign(arm=arm, repeat=repeat, seed=seed, attribute=grouping))
            run = runs[arm][repeat]
            predictions.append(run.predictions.reset_index().assign(arm=arm, repeat=repeat, seed=seed,
                                                                    threshold=run.info.get("threshold")))
            training += [{"arm": arm, "repeat": repeat, "seed": seed, **epoch} for epoch in run.history]
    summary = pd.DataFrame(summary_rows)
    groups_by_repeat = pd.concat(by_repeat, ignore_index=True)
    lead = ["arm", "repeat", "seed", "attribute", "group"]
    predictions = pd.concat(predictions, ignore_index=True).merge(groups, left_on="subject_id", right_index=True)
    return {
        FairnessResult.GROUPS: summary[summary["group"] != ""],
        FairnessResult.GAPS: summary[summary["group"] == ""].drop(columns="group"),
        FairnessResult.COMPARISONS: pd.DataFrame(comparison_rows),
        FairnessResult.GROUPS_BY_REPEAT: groups_by_repeat[lead + [c for c in groups_by_repeat.columns if c not in lead]],
        FairnessResult.PREDICTIONS: predictions[["arm", "repeat", "seed", "subject_id", "label", "score", "prediction",
                                        "threshold", *groups.columns]],
        FairnessResult.TRAINING: pd.DataFrame(training, columns=["arm", "repeat", "seed", "epoch", "train_loss", "val_loss",
                                                        "val_roc_auc"]),
    }


def _write(out: Path, result: FairnessResult, tables: dict[str, pd.DataFrame], overwrite: bool) -> None:
    with StagingDirectory(out, overwrite=overwrite) as staging:
        for name, table in tables.items():
            atomic_write(staging.tmp / name, table.to_csv(index=False))
        result.save(staging.tmp)
        staging.commit()

