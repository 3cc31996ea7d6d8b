"""The judges trained on a cohort that records no prompt attribute: the segmenter still learns,
the attribute judge is left out instead of crashing."""

import pandas as pd
import torch
from phantom_arrays import phantom_arrays

from cardiofair.metrics.evaluators import ATTRIBUTE_COLUMNS, Evaluators, fit_steps, train_evaluators


def test_a_cohort_without_attributes_trains_the_segmenter_and_leaves_the_attribute_judge_out(tmp_path):
    images, masks, attributes = phantom_arrays(24, 0)
    val_images, val_masks, val_attributes = phantom_arrays(8, 1)
    # As the public M&Ms copy: no sex, age, BMI or diagnosis anywhere.
    unknown = pd.DataFrame("unknown", index=attributes.index, columns=list(ATTRIBUTE_COLUMNS))
    untrained = {k: v.clone() for k, v in train_evaluators(images, masks, unknown, val_images, val_masks,
                                                           unknown.iloc[:8], steps=0, classifier_steps=0)
                 .classifier.state_dict().items()}
    evaluators = train_evaluators(images, masks, unknown, val_images, val_masks, unknown.iloc[:8], steps=3,
                                  classifier_steps=3, batch=4, segmenter_batch=2)
    assert evaluators.classes == {} and evaluators.probabilities(val_images) == {}
    assert evaluators.validation and all(k.startswith("dice_") for k in evaluators.validation)
    assert all(torch.equal(untrained[k], v) for k, v in evaluators.classifier.state_dict().items())
    assert evaluators.features(val_images).shape == (8, 96)
    loaded = Evaluators.load(evaluators.save(tmp_path / "judges"))
    assert loaded.classes == {} and loaded.classify(val_images).empty


def test_a_batch_with_nothing_to_learn_is_skipped():
    network = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in network.parameters()]
    fit_steps(network, lambda generator: None, 3, "nothing", False, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters()))
