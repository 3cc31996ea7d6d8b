"""The diagnosis classifier: networks, augmentation, a training loop with early stopping on the
real validation split, and the rule that turns its scores into decisions.

Two presets. ``compact``: a small CNN on the (ED, ES) pair averaged down to 32 px (once, before
training: augmenting and convolving at 32 px costs a quarter of 64 px), sized so that every arm
and repeat of an experiment on a 2000-subject phantom cohort trains in minutes on two CPU cores. ``resnet18``: ResNet-18 (He et al. 2016) written here, with two input channels and one
output logit, for GPU runs (the paper's downstream network family); no torchvision needed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from cardiofair.errors import SettingsError


@dataclass(frozen=True)
class ClassifierSettings:
    """Network preset and training schedule of one classifier."""

    preset: str = "compact"
    max_epochs: int = 20
    patience: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise SettingsError("preset", f"must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 2:
            raise SettingsError(None, "max_epochs and patience must be at least 1, batch_size at least 2")

    @classmethod
    def for_preset(cls, preset: str, **overrides) -> "ClassifierSettings":
        """The preset's schedule, with ``overrides`` (None values keep the preset's)."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return replace(cls(preset=preset, **PRESETS[preset]["schedule"]), **chosen)


class CompactCNN(nn.Module):
    """Four conv-BN-ReLU stages on the pair averaged to 32 px, global pooling, one logit."""

    def __init__(self, width: int = 16):
        super().__init__()
        stages, channels = [], 2
        for multiple in (1, 2, 4, 4):
            stages += [nn.Conv2d(channels, width * multiple, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width * multiple), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width * multiple
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(channels, 1)

    # Heart size and ejection fraction, what the diagnosis rests on, survive halving the
    # resolution; the compute falls fourfold.
    input_size = 32

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        pair = at_input_size(pair, self)
        return self.head(self.features(pair).mean(dim=(2, 3))).squeeze(1)


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18: 7x7 stem, max pooling, four stages of two basic blocks (64-512 channels)."""

    input_size = None

    def __init__(self, in_channels: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, channels = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(channels, width, stride), BasicBlock(width, width, 1)]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(512, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(pair)).mean(dim=(2, 3))).squeeze(1)


def at_input_size(pairs: torch.Tensor, network: nn.Module) -> torch.Tensor:
    """``pairs`` averaged down to the network's ``input_size`` (unchanged when it has none or
    they are no larger)."""
    size = network.input_size
    return F.adaptive_avg_pool2d(pairs, size) if size is not None and pairs.shape[-1] > size else pairs


PRESETS: dict[str, dict] = {
    "compact": {"network": CompactCNN,
                "schedule": {"max_epochs": 20, "patience": 4, "batch_size": 64, "learning_rate": 3e-3}},
    "resnet18": {"network": ResNet18,
                 "schedule": {"max_epochs": 60, "patience": 10, "batch_size": 64, "learning_rate": 1e-3}},
}


def augment(pair: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (up to 15 degrees) and shift (up to 5% of the field of view), then gamma, contrast,
    brightness and noise; the same transform for ED and ES, which must stay registered.
    No rescaling: with a fixed field of view, heart size is what heart failure changes."""
    n = pair.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-math.pi / 12, math.pi / 12)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 0.05)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(pair), list(pair.shape), align_corners=False)
    moved = F.grid_sample(pair, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma, contrast, brightness = (uniform(lo, hi).view(n, 1, 1, 1).to(pair)
                                   for lo, hi in ((0.8, 1.25), (0.9, 1.1), (-0.05, 0.05)))
    noise = torch.randn(pair.shape, generator=generator).to(pair) * uniform(0.0, 0.03).view(n, 1, 1, 1).to(pair)
    return (moved.clamp(0, 1) ** gamma * contrast + brightness + noise).clamp(0, 1)


def predict(model: nn.Module, images: np.ndarray, device: str = "cpu", batch: int = 512) -> np.ndarray:
    """Heart-failure probability of each (2, H, W) image, as a float64 array."""
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).to(device)
            x = at_input_size(x, model).contiguous(memory_format=torch.channels_last)
            scores.append(torch.sigmoid(model(x)).double().cpu())
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold chosen on validation subjects: find the highest validation score t
    that maximises Youden's J = TPR - FPR (equivalently balanced accuracy) when subjects scoring
    at least t are called positive, then place the threshold halfway between t and the next lower
    validation score, so that the boundary sits in the middle of the gap rather than on a
    validation subject. Balanced accuracy rather than accuracy, because with 15 % prevalence
    accuracy rewards calling everyone healthy."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        raise ValueError("the validation split needs subjects of both classes to choose a threshold")
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # roc_curve's first threshold is +inf (nobody positive), which never has the best J.
    best = thresholds[1:][int(np.argmax((tpr - fpr)[1:]))]
    below = scores[scores < best]
    return float((best + below.max()) / 2) if len(below) else float(best)


@dataclass
class TrainedClassifier:
    """A trained network with the epoch it was taken from and its learning curve."""

    model: nn.Module
    best_epoch: int
    history: list[dict]


class GroupDRO:
    """Online group distributionally robust optimisation (Sagawa et al. 2020, "Distributionally
    robust neural networks for group shifts"): a weight per group, raised exponentially by the
    group's loss, and the weighted sum of group losses as the objective, so training minimises
    the worst group's loss rather than the average: the standard in-processing baseline of
    fairness benchmarks (MEDFAIR)."""

    def __init__(self, groups: np.ndarray, step_size: float = 0.01):
        self.names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        self.codes = torch.from_numpy(codes)
        self.weights = torch.full((len(self.names),), 1.0 / len(self.names), dtype=torch.float64)
        self.step_size = step_size

    def loss(self, losses: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The DRO objective of a batch's per-record ``losses`` (records ``index`` of the
        training set), updating the group weights from the groups the batch holds."""
        codes = self.codes[index].to(losses.device)
        present = torch.unique(codes)
        group_losses = torch.stack([losses[codes == g].mean() for g in present])
        self.weights[present] *= torch.exp(self.step_size * group_losses.detach().double().cpu())
        self.weights /= self.weights.sum()
        weights = self.weights[present].to(losses)
        return (weights / weights.sum() * group_losses).sum()


def train_classifier(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
                     settings: ClassifierSettings, seed: int, sample_weights: np.ndarray | None = None,
                     on_epoch: Callable[[dict], None] | None = None, groups: np.ndarray | None = None,
                     start: nn.Module | None = None) -> TrainedClassifier:
    """Train on ``images``/``labels`` (an epoch draws ``len(images)`` records, uniformly without
    replacement or, with ``sample_weights``, with replacement in proportion to them); keep the
    epoch with the best validation AUROC (lower validation loss breaks ties, as AUROC saturates
    on easy data) and stop after ``patience`` epochs without a better one. AUROC, because it does
    not depend on a threshold or on the training prevalence, which differ between arms.
    With ``groups`` (one label per record) the objective is :class:`GroupDRO`'s; ``start`` is a
    trained network to fine-tune instead of a new one. ``on_epoch`` sees each epoch's record
    (for a progress bar)."""
    device = settings.device
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PRESETS[settings.preset]["network"]() if start is None else copy.deepcopy(start)
        model = model.to(device, memory_format=torch.channels_last)
    dro = None if groups is None else GroupDRO(groups)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    x_all = at_input_size(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), model)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    weights = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float64)
    val_targets = torch.from_numpy(np.asarray(val_labels, dtype=np.float64))
    best, best_state, best_epoch, stale, history = (-math.inf, -math.inf), None, 0, 0, []
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_all), generator=generator) if weights is None else \
            torch.multinomial(weights, len(x_all), replacement=True, generator=generator)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            index = order[start:start + settings.batch_size]
            if len(index) < 2:  # BatchNorm cannot normalise a single image
                continue
            # Channels-last convolutions run about 1.4x faster on CPU (benchmarks/README.md).
            x = augment(x_all[index].to(device), generator).contiguous(memory_format=torch.channels_last)
            per_record = F.binary_cross_entropy_with_logits(model(x), y_all[index].to(device), reduction="none")
            loss = per_record.mean() if dro is None else dro.loss(per_record, index)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val_scores = predict(model, val_images, device)
        val_loss = F.binary_cross_entropy(torch.from_numpy(val_scores).clamp(1e-7, 1 - 1e-7), val_targets).item()
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                  "val_roc_auc": float(roc_auc_score(val_labels, val_scores))}
        history.append(record)
        if (record["val_roc_auc"], -val_loss) > best:
            best, best_state, best_epoch, stale = (record["val_roc_auc"], -val_loss), \
                copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
        if on_epoch:
            on_epoch(record)
        if stale >= settings.patience:
            break
    model.load_state_dict(best_state)
    return TrainedClassifier(model.eval(), best_epoch, history)
