"""Evaluation results built by hand as the typed results the stages write
(cardiofair.results: QualityResult, FairnessResult). Their figures are distinctive, so a test
can find each one where the report should show it."""

from cardiofair.results import FairnessResult, QualityResult

DICE = ("ED_LV", "ED_MYO", "ED_RV", "ES_LV", "ES_MYO", "ES_RV")


def _pair(synthetic, reference):
    return {"synthetic": synthetic, "real_reference": reference}


def quality_report():
    cell_realism = {"n_synthetic": 7, "n_real_held_out": 3, "n_real_train": 9,
                    "status": "too few images for a stable figure: 3 real held-out (need 20)"}
    mask_scope = {"synthetic": {k: 0.9117 for k in DICE}, "real_reference": {k: 0.9822 for k in DICE},
                  "n_synthetic": 7, "n_real_test": 3, "status": "ok"}
    prompt_scope = {"synthetic": {"sex": 0.6543, "age": 0.2611, "bmi": 0.5, "diagnosis": 0.9876},
                    "real_reference": {"sex": 0.8871, "age": 0.2585, "bmi": 0.5574, "diagnosis": 0.9942},
                    "n_synthetic": 7, "n_real_same_cells": 100, "status": "ok"}
    privacy_scope = {"copy_rate": {"pixel": _pair(0.0561, 0.0572), "encoder": _pair(0.0216, 0.0438)},
                     "median_nn_distance": {"pixel": _pair(0.1437, 0.1385), "encoder": _pair(1.0415, 0.9850)},
                     "n_synthetic": 7, "n_real_val": 3, "status": "ok"}
    return QualityResult.from_dict({
        "schema": 1,
        "real": {"path": "real", "n_train": 36, "n_val": 12, "n_test": 12},
        "synthetic": {"path": "synthetic", "n": 7},
        "evaluators": {"folder": "cache", "validation": {"balanced_accuracy_sex": 0.9003, "dice_ED_LV": 0.9955},
                       "classes": {"sex": ["Female", "Male"]}},
        "cell_attributes": ["sex", "diagnosis"],
        "realism": {"feature_space": "FD-/KD-cardiofair: test features",
                    "overall": {"n_synthetic": 216, "n_real_held_out": 216, "n_real_train": 546, "status": "ok",
                                "n_compared": 216, "fd": _pair(1.802865, 0.497913),
                                "fd_image_mask": _pair(2.296033, 0.862638), "kd": _pair(0.076826, -0.003987),
                                "kd_std": _pair(0.136525, 0.100351), "ms_ssim": _pair(0.426016, 0.434818),
                                "matched_by_cell": True, "cells_without_real_held_out": []},
                    "cells": {"Female|heart failure": cell_realism}},
        "c2st": {"folds": 5, "steps": 120, "batch": 32,
                 "interval": "95% percentile bootstrap over subjects, 1000 resamples",
                 "overall": {"n_synthetic": 216, "n_real_held_out": 216, "n_real_train": 216, "status": "ok",
                             "n_subjects": {"synthetic": 216, "real_held_out": 216, "real_train": 216},
                             "cells_without_real_held_out": [], "auroc": _pair(0.8617, 0.5133),
                             "auroc_interval": _pair([0.8241, 0.8962], [0.4571, 0.5689])}},
        "mask_fidelity": {"overall": {**mask_scope, "shuffled_mask_floor": {k: 0.4321 for k in DICE}},
                          "cells": {"Female|heart failure": mask_scope}},
        "prompt_fidelity": {"overall": {**prompt_scope, "chance": {"sex": 0.5, "age": 0.25, "bmi": 0.25,
                                                                   "diagnosis": 0.5},
                                        "reference": "new phantom subjects of the same cells",
                                        "real_test": {"sex": 0.9701, "age": 0.2433, "bmi": 0.6012, "diagnosis": 0.8711},
                                        "n_real_test": 12, "cells_without_reference": []},
                            "cells": {"Female|heart failure": prompt_scope}},
        "privacy": {"threshold": {space: {"value": value, "percentile": 5.0,
                                          "of": "real test to real train nearest-neighbour distances"}
                                  for space, value in (("pixel", 0.110292), ("encoder", 0.538012))},
                    "overall": {**privacy_scope, "median_distance_to_mask_source": 0.148811,
                                "mask_source_not_in_train": 0},
                    "cells": {"Female|heart failure": privacy_scope},
                    "closest_pairs": [{"synthetic": "synthetic-c001-00003", "nearest_training_record": "phantom-000042",
                                       "pixel_distance": 0.092225, "flagged_as_copy": True}]},
        "mask_geometry": {
            "measures": ["lv_cavity_mm2", "myocardial_thickness_mm", "rv_mm2", "contraction_index"],
            "scale": {"lv_cavity_mm2": 612.0, "myocardial_thickness_mm": 1.7, "rv_mm2": 540.0, "contraction_index": 0.11},
            "validity": {"n": 7, "valid_share": 1.0, "rejected_share_of_draws": 0.0322},
            "novelty": {"median_nearest_training_distance": _pair(0.1312, 0.1357), "threshold": 0.0712,
                        "copy_rate": _pair(0.0, 0.0417), "of": "the 5th percentile of real test masks' distances"},
            "cells": {"Female|heart failure": {
                "n_synthetic": 7, "n_real_held_out": 3, "n_real_train": 9, "valid_share": 1.0,
                "distance_to_real_held_out": _pair(0.4121, 0.5234),
                "distance_to_phantom_truth": {"synthetic": 0.3312, "real_reference": 0.2214, "ratio": 1.4959,
                                              "n_truth": 50}}}},
        "prompt_effects": {"pairs": 32, "seed": 0, "attributes": {
            "sex": {"synthetic": _effect(["Female", "Male"], 0.03125, 0.015625, 0.0123),
                    "real_reference": _effect(["Female", "Male"], 0.90625, 0.875, 0.7345)},
            "age": {"synthetic": _effect(["40s", "70s"], 0.125, 0.0625, 0.0456),
                    "real_reference": {"values": ["40s", "70s"], "n_pairs": 0, "status": "the phantom cannot draw "
                                       "one subject both ways with the mask fixed: its age cues lie in the heart"}}}},
    })


def _effect(values, moved, follows, shift):
    return {"values": values, "n_pairs": 32, "status": "ok", "moved": moved, "follows_both": follows,
            "probability_shift": shift}


def _summary(mean, low=None, high=None, reason=None):
    return {"mean": mean, "interval": [low, high], "bootstrap_interval": [low, high], "values": [mean, mean],
            "n_defined": 0 if mean is None else 2, "reason": reason}


def _groups(tpr_female, ba_female):
    def group(count, positives, tpr, ba):
        reason = "no positives in group" if positives == 0 else None
        return {"balanced_accuracy": _summary(ba, ba and ba - 0.1, ba and ba + 0.05, reason),
                "true_positive_rate": _summary(tpr, tpr and tpr - 0.2, tpr and tpr + 0.1, reason),
                "false_positive_rate": _summary(0.1, 0.05, 0.15), "count": _summary(count),
                "positives": _summary(positives), "negatives": _summary(count - positives)}

    gaps = {"equalized_odds_difference": _summary(0.3141, 0.2, 0.4), "equal_opportunity_difference":
            _summary(0.2718, 0.1, 0.35), "demographic_parity_difference": _summary(0.05, 0.0, 0.1),
            "balanced_accuracy_difference": _summary(0.12, 0.05, 0.2), "balanced_accuracy_group_min":
            _summary(0.71, 0.6, 0.8)}
    return {
        "sex": {"columns": ["sex"], "excluded_unknown": 0, "reference_group": "Male", "gaps": gaps,
                "groups": {"Female": group(20, 4, tpr_female, ba_female), "Male": group(18, 9, 0.9, 0.9)}},
        "sex&age": {"columns": ["sex", "age"], "excluded_unknown": 0, "reference_group": "Male|60s", "gaps": gaps,
                    "groups": {"Female|40s": group(5, 0, None, None), "Male|60s": group(10, 6, 0.8, 0.85)}},
    }


def fairness_report():
    arms = {}
    for arm, tpr_female in (("real", 0.5), ("oversample", 0.75)):
        arms[arm] = {"arm": arm, "dose": 1.0, "training": [{"n_records": 36, "n_synthetic": 0, "seed": s} for s in (0, 1)],
                     "overall": {"balanced_accuracy": _summary(0.8123, 0.75, 0.86),
                                 "roc_auc": {**_summary(0.9012), "bootstrap_interval": [None, None]},
                                 "true_positive_rate": _summary(0.7, 0.6, 0.8),
                                 "false_positive_rate": _summary(0.1, 0.05, 0.15)},
                     "attributes": _groups(tpr_female, 0.7)}
    difference = {"difference": 0.0234, "interval": [-0.01, 0.05], "p_value": 0.2, "p_holm": 0.4321, "n_pairs": 2,
                  "reason": None, "bootstrap_interval": [-0.02, 0.06]}
    return FairnessResult(**{"schema": FairnessResult.SCHEMA, "cardiofair_version": "0.1.0",
            "settings": {"arms": ["real", "oversample"], "repeats": 2, "positive_diagnosis": "heart failure",
                         "classifier": {"preset": "compact"}},
            "reference_arm": "real", "seeds": [0, 1],
            "data": {"splits": {"test": {"subjects": 38, "positives": 13}}},
            "arms": arms,
            "comparisons": {"oversample": {"overall": {"balanced_accuracy": difference},
                                           "attributes": {"sex": {"gaps": {"equalized_odds_difference": difference}}}}}})
