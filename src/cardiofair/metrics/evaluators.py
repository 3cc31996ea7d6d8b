"""Evaluator networks that cardiofair trains on real training images only.

No pretrained weights can be downloaded, so mask and prompt fidelity are judged by networks
trained here: a small U-Net segmenter (per frame) and a CNN that predicts every prompt attribute
from the (ED, ES) pair. Each is saved with its validation score, so a reader can judge the judge.

Both learn from real images degraded at random (:class:`Augmentation`: grain, salt-and-pepper
and speckle noise, blur, contrast and small rigid moves). A judge that never saw grain reads a
grainy synthetic image as nothing in particular, and per-image prompt fidelity then measures
the generator's texture instead of whether it drew the prompt.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from cardiofair.threads import in_batches, side_by_side

ATTRIBUTE_COLUMNS = ("sex", "age", "bmi", "diagnosis")


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs), nn.SiLU(),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs), nn.SiLU())


class SegmentationNet(nn.Module):
    """A three-level U-Net: one frame in, logits of the four labels out. Width 8: a sixth of the
    cost of width 16 per step (channels-last, benchmarks/README.md) for a myocardium Dice on real
    validation images lower by about 0.01 (0.969 against 0.978 at 400 steps)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.down1, self.down2, self.bottom = _block(1, width), _block(width, 2 * width), _block(2 * width, 4 * width)
        self.up2, self.up1 = _block(6 * width, 2 * width), _block(3 * width, width)
        self.out = nn.Conv2d(width, 4, 1)

    def encode(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The down path's three levels, finest first."""
        a = self.down1(frame)
        b = self.down2(F.max_pool2d(a, 2))
        return a, b, self.bottom(F.max_pool2d(b, 2))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        a, b, c = self.encode(frame)
        b = self.up2(torch.cat([F.interpolate(c, scale_factor=2.0), b], 1))
        return self.out(self.up1(torch.cat([F.interpolate(b, scale_factor=2.0), a], 1)))


class AttributeNet(nn.Module):
    """A CNN on the (ED, ES) pair with one classification head per prompt attribute."""

    def __init__(self, classes: dict[str, int], width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _block(2, width), nn.MaxPool2d(2), _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.MaxPool2d(2), _block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({name: nn.Linear(4 * width, n) for name, n in classes.items()})

    def forward(self, pair: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(pair)
        return {name: head(features) for name, head in self.heads.items()}


@dataclass(frozen=True)
class Augmentation:
    """Random degradations of the judges' training images, per image: with ``probability`` a
    small rigid move, a gamma, contrast and brightness change, a blur of random strength, and
    one kind of noise (Gaussian, salt-and-pepper, multiplicative speckle or spatially correlated
    grain) of random strength up to its maximum; the rest stay clean, so clean images keep
    their accuracy. Part of the evaluator cache key."""

    probability: float = 0.8
    max_rotation_deg: float = 10.0
    max_shift_px: float = 3.0
    max_log_gamma: float = 0.35
    max_contrast: float = 0.15
    max_brightness: float = 0.08
    blur_probability: float = 0.4
    max_gaussian: float = 0.12
    max_salt_pepper: float = 0.08
    max_speckle: float = 0.2
    max_grain: float = 0.1


def _gaussian_blur(images: torch.Tensor) -> torch.Tensor:
    """Each channel blurred by a 3x3 Gaussian of about one pixel, edges repeated."""
    # The separable taps as sums of shifted views: as a grouped convolution oneDNN took 4.6 ms
    # for a batch of 32 pairs, a fifth of the attribute judge's training step.
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = 0.25 * padded[..., :-2, :] + 0.5 * padded[..., 1:-1, :] + 0.25 * padded[..., 2:, :]
    return 0.25 * rows[..., :-2] + 0.5 * rows[..., 1:-1] + 0.25 * rows[..., 2:]


def degrade(images: torch.Tensor, masks: torch.Tensor, settings: Augmentation,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Degraded copies of (B, C, H, W) images in [0, 1] and their (B, C, H, W) label masks,
    moved with them; every channel of an image (ED and ES) is degraded alike."""
    n, channels, height, width = images.shape
    uniform = lambda *shape: torch.rand(*shape, generator=generator)
    signed = lambda *shape: 2.0 * uniform(*shape) - 1.0
    chosen = (uniform(n) < settings.probability).float()
    angle = signed(n) * math.radians(settings.max_rotation_deg) * chosen
    shift = signed(n, 2) * settings.max_shift_px * chosen[:, None] * torch.tensor([2.0 / width, 2.0 / height])
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), shift[:, 0]], 1),
                         torch.stack([angle.sin(), angle.cos(), shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, channels, height, width], align_corners=False)
    # Border padding: a prepared image is a crop of a larger scan, never framed in black.
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()

    per_image = lambda values: values.view(n, 1, 1, 1)
    gamma = torch.exp(signed(n) * settings.max_log_gamma * chosen)
    images = images.clamp(min=1e-6) ** per_image(gamma)
    images = images * per_image(1.0 + signed(n) * settings.max_contrast * chosen) \
        + per_image(signed(n) * settings.max_brightness * chosen)
    blur = uniform(n) * (uniform(n) < settings.blur_probability).float() * chosen
    images = images + per_image(blur) * (_gaussian_blur(images) - images)

    kind = torch.randint(0, 4, (n,), generator=generator)
    strength = per_image(uniform(n) * chosen)
    gaussian = torch.randn(images.shape, generator=generator) * settings.max_gaussian
    speckle = images * torch.randn(images.shape, generator=generator) * settings.max_speckle
    grain = _gaussian_blur(torch.randn(images.shape, generator=generator))
    grain = grain / grain.std() * settings.max_grain
    noise = torch.where(per_image(kind == 0), gaussian, torch.where(per_image(kind == 1), speckle, grain))
    images = torch.where(per_image(kind == 3), images, images + strength * noise)
    # Salt-and-pepper (kind 3): a share of pixels, up to the maximum, set to black or white.
    flip = uniform(*images.shape)
    hit = per_image(kind == 3) & (flip < strength * settings.max_salt_pepper)
    images = torch.where(hit, (flip < strength * settings.max_salt_pepper / 2).float(), images)
    return images.clamp(0.0, 1.0), masks


@dataclass
class Evaluators:
    """The trained segmenter and attribute classifier, with their class lists and validation scores."""

    # Their class lists and validation scores, written last, so that its presence marks a
    # complete set of judges.
    FILE: ClassVar[str] = "evaluators.json"

    segmenter: SegmentationNet
    classifier: AttributeNet
    classes: dict[str, list[str]]
    validation: dict[str, float] = field(default_factory=dict)

    def segment(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N, 2, H, W) images in [0, 1] -> (N, 2, H, W) predicted labels."""
        frames = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, *images.shape[2:])
        labels = in_batches(lambda rows: self.segmenter(frames[rows]).argmax(1), len(frames), batch)
        return torch.cat(labels).reshape(images.shape).numpy().astype(np.uint8)

    def probabilities(self, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Per attribute, the (N, classes) probabilities of (N, 2, H, W) images, classes in the
        order of ``self.classes``."""
        pairs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        chunks = in_batches(lambda rows: {name: logits.softmax(1) for name, logits in
                                          self.classifier(pairs[rows]).items()}, len(pairs), batch)
        return {name: torch.cat([chunk[name] for chunk in chunks]).numpy() if chunks else
                np.zeros((0, len(self.classes[name]))) for name in self.classes}

    def classify(self, images: np.ndarray, batch: int = 256) -> pd.DataFrame:
        """Predicted attribute classes of (N, 2, H, W) images, one column per attribute (none,
        but still N rows, where the judge reads no attribute)."""
        return pd.DataFrame({name: [self.classes[name][k] for k in p.argmax(1).tolist()]
                             for name, p in self.probabilities(images, batch).items()},
                            index=pd.RangeIndex(len(images)))

    @property
    def feature_network(self) -> str:
        """Which trained network the realism features come from: the attribute classifier, or,
        where it learned nothing (a cohort that records no attribute with two known values), the
        segmenter, which every cohort trains: an untrained network's features would measure
        its random initialisation, not the images."""
        return "attribute classifier" if self.classes else "segmenter"

    def features(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Realism features of (N, 2, H, W) images, (N, 96), from :attr:`feature_network`. The
        classifier's: its pooled last-block features (anatomy, attributes) joined to the
        per-channel mean and standard deviation of its first block (texture: noise, blur,
        contrast), to which the last block is deliberately blind. The segmenter's, per frame (ED,
        then ES): its pooled bottom block joined to its first block's channel means and standard
        deviations. The space of FD-/KD-cardiofair and of the encoder-space privacy distances."""
        pairs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))

        def texture(first: torch.Tensor) -> list[torch.Tensor]:
            return [first.mean((2, 3)), first.std((2, 3))]

        def classifier_features(rows: torch.Tensor) -> torch.Tensor:
            hidden, first = pairs[rows], None
            for layer in self.classifier.features:
                hidden = layer(hidden)
                if first is None and isinstance(layer, nn.Sequential):
                    first = hidden
            return torch.cat([hidden, *texture(first)], 1)

        def segmenter_features(rows: torch.Tensor) -> torch.Tensor:
            first, _, bottom = self.segmenter.encode(pairs[rows].reshape(-1, 1, *pairs.shape[2:]))
            return torch.cat([bottom.mean((2, 3)), *texture(first)], 1).reshape(len(rows), -1)

        chunks = in_batches(classifier_features if self.classes else segmenter_features, len(pairs), batch)
        return torch.cat(chunks).numpy().astype(np.float64)

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, network in (("segmenter", self.segmenter), ("classifier", self.classifier)):
            # Trained channels-last; safetensors stores plain row-major tensors.
            save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(folder / f"{name}.safetensors"))
        (folder / self.FILE).write_text(json.dumps({"classes": self.classes, "validation": self.validation},
                                                   indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Evaluators":
        folder = Path(folder)
        info = json.loads((folder / cls.FILE).read_text())
        segmenter = SegmentationNet()
        segmenter.load_state_dict(load_file(str(folder / "segmenter.safetensors")))
        classifier = AttributeNet({name: len(values) for name, values in info["classes"].items()})
        classifier.load_state_dict(load_file(str(folder / "classifier.safetensors")))
        # In the layout they were trained in, so that cached evaluators compute exactly what
        # freshly trained ones do (a plain layout rounds convolutions differently).
        return cls(segmenter.to(memory_format=torch.channels_last).eval(),
                   classifier.to(memory_format=torch.channels_last).eval(), info["classes"], info["validation"])


def judged_classes(train_attributes: pd.DataFrame) -> dict[str, list[str]]:
    """The classes the attribute judge learns: per prompt attribute, the known values of the
    training records, where there are at least two."""
    classes = {name: sorted(v for v in train_attributes[name].unique() if v != "unknown")
               for name in ATTRIBUTE_COLUMNS if name in train_attributes}
    return {name: values for name, values in classes.items() if len(values) >= 2}


def fit_steps(network: nn.Module, loss: Callable[[torch.Generator], torch.Tensor | None], steps: int, label: str,
              progress: bool, generator: torch.Generator, position: int = 0) -> None:
    """AdamW with one cycle (warm up, then anneal to nearly zero): in a few hundred steps it ends
    far closer to a minimum than a constant rate, which the study's time budget needs. ``loss``
    draws its batch with ``generator`` (None: the batch has nothing to learn, and the step is
    skipped); ``position`` places the progress bar."""
    # Channels-last convolutions run about 1.3x faster on CPU; inputs follow the weights' layout.
    network.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=max(steps, 1))
    for _ in tqdm(range(steps), desc=label, unit="step", disable=not progress, leave=False, position=position):
        value = loss(generator)
        if value is None:
            continue
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        schedule.step()


def train_evaluators(train_images: np.ndarray, train_masks: np.ndarray, train_attributes: pd.DataFrame,
                     val_images: np.ndarray, val_masks: np.ndarray, val_attributes: pd.DataFrame,
                     steps: int = 400, classifier_steps: int = 700, batch: int = 32, segmenter_batch: int = 16,
                     seed: int = 0, augmentation: Augmentation = Augmentation(),
                     progress: bool = False, beside: Sequence[Callable[[], None]] = ()) -> Evaluators:
    """Train both evaluators on real training records degraded by ``augmentation`` (``batch``
    pairs per classifier step, ``segmenter_batch`` pairs, i.e. twice as many frames, per
    segmenter step); score them on real (clean) validation records. ``beside``, other work
    that does not need them (in parts), runs on the cores the trainings leave free.

    Attributes whose value is ``unknown`` are not learned for that record. Where no attribute
    has two known values (a cohort that records none), the attribute judge has nothing to learn
    and is left untrained, with no classes: prompt fidelity is then not measured, and the realism
    features come from the segmenter (:attr:`Evaluators.feature_network`).
    """
    from cardiofair.metrics.fidelity import balanced_accuracy, dice_table

    classes = judged_classes(train_attributes)
    targets = {name: torch.tensor([values.index(v) if v in values else -100 for v in train_attributes[name]])
               for name, values in classes.items()}
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    masks = torch.from_numpy(np.ascontiguousarray(train_masks)).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        segmenter, classifier = SegmentationNet(), AttributeNet({n: len(v) for n, v in classes.items()})
    # Two loops, one per network, each with its own random stream: the segmenter's dense loss
    # would otherwise drown the classifier's, each converges at its own pace, and the two train
    # side by side (cardiofair.threads).
    def degraded_batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(images), (size,), generator=generator)
        return (index, *degrade(images[index], masks[index], augmentation, generator))

    def segmenter_loss(generator: torch.Generator) -> torch.Tensor:
        _, x, y = degraded_batch(segmenter_batch, generator)
        return F.cross_entropy(segmenter(x.reshape(-1, 1, *x.shape[2:])), y.reshape(-1, *x.shape[2:]))

    def classifier_loss(generator: torch.Generator) -> torch.Tensor | None:
        index, x, _ = degraded_batch(batch, generator)
        terms = [F.cross_entropy(logits, targets[name][index], ignore_index=-100)
                 for name, logits in classifier(x).items() if (targets[name][index] >= 0).any()]
        return sum(terms[1:], terms[0]) if terms else None

    fits = [(segmenter, segmenter_loss, steps, "training segmenter")]
    if classes:
        fits.append((classifier, classifier_loss, classifier_steps, "training attribute classifier"))
    def fit(job: tuple[int, tuple] | Callable[[], None]) -> None:
        if callable(job):
            job()
            return
        number, (network, loss, count, label) = job
        fit_steps(network, loss, count, label, progress, torch.Generator().manual_seed(seed + number), number)

    # On two cores both trainings start at once and the parts of ``beside`` follow on whichever
    # core is free first: the shorter training's, then the other's too.
    side_by_side(fit, [*enumerate(fits), *beside])
    evaluators = Evaluators(segmenter.eval(), classifier.eval(), classes)
    dice = dice_table(evaluators.segment(val_images), val_masks).mean()
    predicted = evaluators.classify(val_images)
    evaluators.validation = {**{f"dice_{k}": round(float(v), 4) for k, v in dice.items()},
                             **{f"balanced_accuracy_{name}": round(balanced_accuracy(val_attributes[name],
                                                                                     predicted[name]), 4)
                                for name in classes}}
    return evaluators


def stack(records: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) arrays of a list of records."""
    return np.stack([r.image for r in records]), np.stack([r.mask for r in records])
