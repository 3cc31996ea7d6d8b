"""Honesty checks of the fidelity measures on real phantom images: a judge must score real test
images like its validation set, and collapse when masks or attributes are shuffled."""

import numpy as np
import pandas as pd
import pytest

from cardiofair.metrics.evaluators import Evaluators
from cardiofair.metrics.fidelity import balanced_accuracy, dice_table, prompt_fidelity


def test_mask_fidelity_of_real_images_is_the_segmenters_dice_and_collapses_when_shuffled(judged):
    evaluators, (images, masks, _) = judged
    own = dice_table(evaluators.segment(images), masks).mean()
    for column, value in own.items():
        assert value == pytest.approx(evaluators.validation[f"dice_{column}"], abs=0.05), column
    assert own.min() > 0.85
    shuffled = dice_table(evaluators.segment(images), masks[np.random.default_rng(0).permutation(len(masks))]).mean()
    assert (own - shuffled).min() > 0.15 and shuffled["ED_MYO"] < 0.6


def test_prompt_fidelity_matches_validation_and_drops_to_chance_when_shuffled(judged):
    evaluators, (images, _, attributes) = judged
    predicted = evaluators.classify(images)
    own = prompt_fidelity(predicted, attributes)
    shuffled = prompt_fidelity(predicted, attributes.iloc[np.random.default_rng(0).permutation(len(attributes))]
                               .reset_index(drop=True))
    # Sex and heart failure are what the phantom's geometry carries strongly enough to learn here.
    for name in ("sex", "diagnosis"):
        assert own[name] == pytest.approx(evaluators.validation[f"balanced_accuracy_{name}"], abs=0.1), name
        assert own[name] > shuffled[name] + 0.12 and shuffled[name] < 0.6, name


def test_evaluators_round_trip(judged, tmp_path):
    evaluators, (images, _, _) = judged
    loaded = Evaluators.load(evaluators.save(tmp_path / "judges"))
    assert np.array_equal(loaded.segment(images[:5]), evaluators.segment(images[:5]))
    assert loaded.classify(images[:5]).equals(evaluators.classify(images[:5]))
    assert loaded.validation == evaluators.validation


def test_dice_and_balanced_accuracy_by_hand():
    mask = np.zeros((1, 2, 4, 4), np.uint8)
    mask[0, :, :2, :2] = 1
    predicted = mask.copy()
    predicted[0, 0, 0, 0] = 0
    table = dice_table(predicted, mask)
    assert table.loc[0, "ED_LV"] == pytest.approx(2 * 3 / 7) and table.loc[0, "ES_LV"] == 1.0
    assert table.loc[0, "ED_RV"] == 1.0  # absent from both
    truth = pd.Series(["a", "a", "a", "b"])
    assert balanced_accuracy(truth, pd.Series(["a", "a", "a", "a"])) == 0.5
    assert balanced_accuracy(pd.Series(["unknown", "b"]), pd.Series(["a", "b"])) == 1.0
    # weighted: the right "a" counts three times, the wrong one once
    weighted = balanced_accuracy(pd.Series(["a", "a", "b"]), pd.Series(["a", "b", "b"]), np.array([3.0, 1.0, 1.0]))
    assert weighted == pytest.approx((3 / 4 + 1) / 2)
