"""The judges trained on a cohort that records no prompt attribute: the segmenter still learns,
the attribute judge is left out instead of crashing, and the realism features come from the
trained segmenter, never from the untrained classifier."""

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from phantom_arrays import phantom_arrays

from cardiofair.metrics.evaluators import (
    ATTRIBUTE_COLUMNS,
    AttributeNet,
    Evaluators,
    SegmentationNet,
    _gaussian_blur,
    fit_steps,
    train_evaluators,
)


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
    features = evaluators.features(val_images)
    assert features.shape == (8, 96) and evaluators.feature_network == "segmenter"
    # They are the trained segmenter's: another classifier leaves them, another segmenter moves them.
    other_classifier = Evaluators(evaluators.segmenter, AttributeNet({}), {})
    assert np.array_equal(other_classifier.features(val_images), features)
    other_segmenter = Evaluators(SegmentationNet().eval(), evaluators.classifier, {})
    assert not np.allclose(other_segmenter.features(val_images), features)
    loaded = Evaluators.load(evaluators.save(tmp_path / "judges"))
    assert loaded.classes == {} and loaded.classify(val_images).shape == (8, 0)
    assert np.array_equal(loaded.features(val_images), features)


def test_a_cohort_with_attributes_keeps_the_classifiers_features():
    images, masks, attributes = phantom_arrays(24, 0)
    evaluators = train_evaluators(images, masks, attributes, images[:8], masks[:8], attributes.iloc[:8], steps=2,
                                  classifier_steps=2, batch=4, segmenter_batch=2)
    assert evaluators.feature_network == "attribute classifier"
    other_segmenter = Evaluators(SegmentationNet().eval(), evaluators.classifier, evaluators.classes)
    assert np.array_equal(other_segmenter.features(images[:8]), evaluators.features(images[:8]))


def test_a_batch_with_nothing_to_learn_is_skipped():
    network = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in network.parameters()]
    fit_steps(network, lambda generator: None, 3, "nothing", False, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters()))


def test_the_judges_blur_is_a_3x3_gaussian_with_edges_repeated():
    """The augmentation's blur as shifted sums equals the separable [1, 2, 1] / 4 kernel
    convolved over the replicate-padded image, and leaves a constant image unchanged."""
    images = torch.rand(3, 2, 12, 10, generator=torch.Generator().manual_seed(0))
    taps = torch.tensor([0.25, 0.5, 0.25])
    kernel = (taps[:, None] * taps[None, :]).expand(2, 1, 3, 3)
    expected = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=2)
    torch.testing.assert_close(_gaussian_blur(images), expected)
    assert not torch.allclose(_gaussian_blur(images), images)
    torch.testing.assert_close(_gaussian_blur(torch.full((1, 2, 5, 5), 0.3)), torch.full((1, 2, 5, 5), 0.3))
