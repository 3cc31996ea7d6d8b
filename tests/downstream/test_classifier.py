"""The classifier's parts: networks of the right shape and size, label-safe augmentation, the
threshold rule, and a training loop that learns, stops early and repeats itself."""

import numpy as np
import pytest
import torch

from cardiofair.downstream import classifier
from cardiofair.downstream.classifier import (
    ClassifierSettings,
    CompactCNN,
    GroupDRO,
    ResNet18,
    augment,
    predict,
    train_classifier,
    youden_threshold,
)


def test_networks_take_the_pair_and_give_one_logit():
    pair = torch.rand(3, 2, 64, 64)
    assert CompactCNN()(pair).shape == (3,)
    resnet = ResNet18()
    assert resnet(pair).shape == (3,)
    # torchvision's resnet18 has 11,689,512 parameters with 3 input channels and 1000 classes;
    # with 2 channels and one logit: minus 64*49 stem weights and 999*(512+1) head weights.
    assert sum(p.numel() for p in resnet.parameters()) == 11_689_512 - 64 * 49 - 999 * 513


def test_augmentation_keeps_range_and_registration_and_repeats_with_the_seed():
    image = torch.zeros(8, 2, 32, 32)
    image[:, :, 10:22, 12:20] = 0.8
    out = augment(image, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(image, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(image, torch.Generator().manual_seed(1)))
    # ED and ES were identical: one transform for both leaves them equal up to pixel noise.
    assert (out[:, 0] - out[:, 1]).abs().mean() < 0.05
    assert (out[:, 0] - image[:, 0]).abs().mean() > 0.02  # ... and it did move or recolour them


def test_threshold_rule():
    # Separable: halfway between the lowest positive and the highest negative.
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)
    # J = 0.5 at 0.9 and at 0.2: the higher one, placed halfway to the next lower score (0.3).
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.9]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([0, 0], [0.1, 0.2])


def _bright_spot_data(n, seed):
    # Positives have a bright square in ES only: learnable from the pair, not from ED alone.
    rng = np.random.default_rng(seed)
    images = rng.random((n, 2, 16, 16), dtype=np.float32) * 0.3
    labels = (rng.random(n) < 0.3).astype(int)
    images[labels == 1, 1, 4:10, 4:10] += 0.6
    return images, labels


def test_training_learns_stops_early_and_repeats():
    images, labels = _bright_spot_data(160, 0)
    val_images, val_labels = _bright_spot_data(60, 1)
    settings = ClassifierSettings.for_preset("compact", max_epochs=12, patience=2, batch_size=32)
    first = train_classifier(images, labels, val_images, val_labels, settings, seed=3)
    assert first.history[first.best_epoch - 1]["val_roc_auc"] > 0.95
    assert len(first.history) <= settings.max_epochs
    best = max(first.history, key=lambda r: (r["val_roc_auc"], -r["val_loss"]))
    assert best["epoch"] == first.best_epoch
    if len(first.history) < settings.max_epochs:
        assert len(first.history) == first.best_epoch + settings.patience
    again = train_classifier(images, labels, val_images, val_labels, settings, seed=3)
    assert np.array_equal(predict(first.model, val_images), predict(again.model, val_images))
    other = train_classifier(images, labels, val_images, val_labels, settings, seed=4)
    assert not np.array_equal(predict(first.model, val_images), predict(other.model, val_images))


def test_sample_weights_change_what_is_drawn(monkeypatch):
    images, labels = _bright_spot_data(120, 2)
    settings = ClassifierSettings.for_preset("compact", max_epochs=1, patience=1, batch_size=32)
    seen = []

    def watch(pair, generator):
        seen.append(pair[:, 1, 4:10, 4:10].mean(dim=(1, 2)) > 0.5)
        return augment(pair, generator)

    monkeypatch.setattr(classifier, "augment", watch)
    train_classifier(images, labels, images, labels, settings, seed=0, sample_weights=np.where(labels == 1, 1.0, 0.0))
    assert torch.cat(seen).all()  # only positives had weight


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        ClassifierSettings(preset="vgg")


def test_group_dro_moves_weight_to_the_group_with_the_larger_loss():
    dro = GroupDRO(np.array(["a", "a", "b", "b"]), step_size=0.5)
    losses = torch.tensor([0.1, 0.1, 2.0, 2.0])
    for _ in range(5):
        objective = dro.loss(losses, torch.arange(4))
    assert dro.weights[1] > 0.9 and objective > losses.mean()
    # A batch holding one group only leaves the other's weight as it was, relative to itself.
    before = dro.weights.clone()
    dro.loss(torch.tensor([1.0]), torch.tensor([0]))
    assert dro.weights[0] / dro.weights[1] > before[0] / before[1]

