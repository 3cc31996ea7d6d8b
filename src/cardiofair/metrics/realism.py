"""Realism and diversity of image sets, measured without downloaded weights.

Inception and RadImageNet weights cannot be shipped, so distances are taken in the feature
space of cardiofair's own attribute classifier, or of its segmenter on a cohort that records no
prompt attribute (both trained on the real training split; see ``Evaluators.features``). They are
therefore named FD-cardiofair and KD-cardiofair, never FID or KID, and only mean something beside
the same distance between two real sets of the same size.

The classifier two-sample test needs no features and no minimum size: a small CNN learns to tell
two sets apart, and its AUROC on folds it did not see, with an interval over subjects, says how
well it can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from cardiofair.metrics.evaluators import AttributeNet, fit_steps
from cardiofair.threads import side_by_side

# The five MS-SSIM scale weights of Wang et al. (2003), finest first. A 64 px image only has
# room for the first three, which are then renormalised.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _moments(features: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if weights is None:
        return features.mean(0), np.cov(features, rowvar=False)
    return np.average(features, axis=0, weights=weights), np.cov(features, rowvar=False, aweights=weights)


class FrechetReference:
    """Fréchet distances from one (N, D) feature set to others: its moments and matrix square
    root are computed once (the real training set, against which every resample is measured).
    ``weights`` reweight its rows (to give it another set's subgroup mix)."""

    def __init__(self, a: np.ndarray, weights: np.ndarray | None = None) -> None:
        self.mean, cov = _moments(a, weights)
        # tr sqrt(A B) = sum of sqrt(eigenvalues of A^1/2 B A^1/2), a symmetric positive
        # semi-definite matrix: stable and fast even when few images make the covariances singular.
        values, vectors = linalg.eigh(cov)
        self.root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        self.trace = np.trace(cov)

    def distance(self, b: np.ndarray) -> float:
        """The Fréchet distance to the (M, D) feature set ``b``."""
        mean_b, cov_b = _moments(b, None)
        cross = linalg.eigvalsh(self.root @ cov_b @ self.root)
        distance = np.sum((self.mean - mean_b) ** 2) + self.trace + np.trace(cov_b) - 2.0 * np.sqrt(
            np.clip(cross, 0.0, None)).sum()
        return float(max(distance, 0.0))


def frechet_distance(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets; ``weights_a``
    reweights the rows of ``a`` (to give it another set's subgroup mix)."""
    return FrechetReference(a, weights_a).distance(b)


def interval_at(figure: float, half_values: Sequence[float], half_size: int, size: int, pool: int,
                floor: float | None = None) -> list[float]:
    """The 95% interval of a distance measured on ``size`` images, from its values on
    resampled halves (``half_size`` images drawn by subject, without replacement, from the
    ``pool`` images at hand): the halves' spread about their median, scaled to ``size`` and
    centred on the figure.

    A distance between two real sets is mostly a small-sample bias whose spread falls as 1/n
    (FD-cardiofair's real-vs-real s.d. times n stays within about 50-140 from 10 to 500 images on
    the phantom and the M&Ms copy, docs/quality.md), hence the factor ``half_size / size``; halves
    drawn from a pool of ``pool`` overlap, which narrows their spread by sqrt(1 - half/pool)
    (the finite-population correction), hence its inverse. The bootstrap (with replacement) is
    no use here: its duplicates leave about 0.63 n distinct images, whose singular covariance
    moves FD 1.8 times its value and spreads it 2.5 times as wide (Gaussian features of 96
    dimensions, 50-321 images), where these scaled halves came within 10-20% of the true spread."""
    low, middle, high = np.quantile(np.asarray(half_values, dtype=np.float64), [0.025, 0.5, 0.975])
    scale = half_size / size / math.sqrt(1.0 - half_size / pool)
    bounds = [float(figure + (low - middle) * scale), float(figure + (high - middle) * scale)]
    return [max(bound, floor) for bound in bounds] if floor is not None else bounds


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 100,
                    seed: int = 0, weights_a: np.ndarray | None = None) -> tuple[float, float]:
    """Unbiased squared MMD with the cubic polynomial kernel of KID, averaged over random
    subsets: (mean, standard deviation over subsets). Subsets of ``a`` are drawn with
    probabilities proportional to ``weights_a`` when given."""
    rng = np.random.default_rng(seed)
    probabilities = None if weights_a is None else weights_a / weights_a.sum()
    size = min(subset_size, len(b), len(a) if probabilities is None else int((probabilities > 0).sum()))
    dimension = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False, p=probabilities)]
        y = b[rng.choice(len(b), size, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / dimension + 1.0) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off_diagonal + (kyy.sum() - np.trace(kyy)) / off_diagonal
                      - 2.0 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def mask_geometry(masks: np.ndarray) -> np.ndarray:
    """(N, 18) geometry of (N, 2, H, W) label masks: per frame and structure, the area fraction
    and the centroid offset from the image centre (as fractions of the size).

    Joined to the image features, it makes the distance sensitive to whether an image fits its
    mask: a dilated failing ventricle drawn into a small healthy mask is unrealistic as a pair
    even when each half looks real alone.
    """
    n, frames, height, width = masks.shape
    rows = (np.arange(height) - (height - 1) / 2) / height
    columns = (np.arange(width) - (width - 1) / 2) / width
    features = []
    for frame in range(frames):
        for label in (1, 2, 3):
            inside = (masks[:, frame] == label).astype(np.float64)
            area = inside.sum((1, 2))
            safe = np.maximum(area, 1.0)
            features += [area / (height * width), (inside.sum(2) @ rows) / safe, (inside.sum(1) @ columns) / safe]
    return np.stack(features, 1)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).float()
    return (g[:, None] * g[None, :])[None, None]


def _window_filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(images, kernel)`` for (N, 1, H, W) images, computed as one depthwise convolution
    with the images as channels: the same sums, over ten times faster on CPU, where a
    single-channel convolution is the slow case."""
    n, _, height, width = images.shape
    size = kernel.shape[-1]
    filtered = F.conv2d(images.reshape(1, n, height, width), kernel.expand(n, 1, size, size), groups=n)
    return filtered.reshape(n, 1, height - size + 1, width - size + 1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM of image batches (N, 1, H, W) in [0, 1], one value per pair.

    As many of the five standard scales are used as the image size allows with the given
    window (three at 64 px), their weights renormalised to sum to one.
    """
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) // 2 ** scales >= 2 * window:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    kernel = _gaussian_window(window, sigma)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    factors = []
    for scale in range(scales):
        mu_x, mu_y = _window_filter(x, kernel), _window_filter(y, kernel)
        var_x = _window_filter(x * x, kernel) - mu_x ** 2
        var_y = _window_filter(y * y, kernel) - mu_y ** 2
        cov = _window_filter(x * y, kernel) - mu_x * mu_y
        contrast_structure = ((2 * cov + c2) / (var_x + var_y + c2)).flatten(1).mean(1)
        if scale == scales - 1:
            luminance = ((2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)).flatten(1).mean(1)
            factors.append(torch.relu(luminance * contrast_structure))
        else:
            factors.append(torch.relu(contrast_structure))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(factors, 1) ** weights, 1)


def mean_pairwise_ms_ssim(images: np.ndarray, pairs: int = 300, seed: int = 0) -> float:
    """Mean MS-SSIM over random pairs of distinct images of an (N, 2, H, W) set, both frames;
    lower means a more diverse set. NaN with fewer than two images."""
    if len(images) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(images), pairs)
    second = (first + rng.integers(1, len(images), pairs)) % len(images)
    a = torch.from_numpy(np.ascontiguousarray(images[first], dtype=np.float32)).reshape(-1, 1, *images.shape[2:])
    b = torch.from_numpy(np.ascontiguousarray(images[second], dtype=np.float32)).reshape(-1, 1, *images.shape[2:])
    with torch.no_grad():
        return float(ms_ssim(a, b).mean())


# --- the classifier two-sample test -------------------------------------------------------------

# The two-sample classifier sees the pair averaged down to 32 px: a quarter of the cost of 64 px
# per step, so that ten trainings (five folds, synthetic and reference) stay within seconds; a
# blur still shows in the averaged image's edges (real against blurred real: AUROC above 0.9 in
# tests/metrics/test_two_sample.py).
TWO_SAMPLE_INPUT_SIZE = 32
TWO_SAMPLE_WIDTH = 8


@dataclass
class TwoSampleTest:
    """A classifier two-sample test: the AUROC of the held-out folds' scores, its percentile
    interval over resampled subjects, and the out-of-fold score of every record (the probability
    of its being of the second set)."""

    auroc: float
    interval: tuple[float, float]
    scores: np.ndarray


def subject_folds(subjects: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each record: a subject's records share one fold, and each set's subjects are
    dealt to the folds in a random order, so every fold holds a share of both sets."""
    fold = np.empty(len(subjects), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        mine = np.flatnonzero(labels == label)
        names, of_record = np.unique(subjects[mine], return_inverse=True)
        dealt = np.empty(len(names), dtype=np.int64)
        dealt[rng.permutation(len(names))] = np.arange(len(names)) % folds
        fold[mine] = dealt[of_record]
    return fold


def weighted_aurocs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """The AUROC of ``scores`` for 0/1 ``labels`` under each row of ``weights`` (R, N), a record
    counted as often as its weight (tied scores count half), all rows at once: the
    Mann-Whitney statistic from one sort. With ``groups``, only pairs within a group count."""
    groups = np.zeros(len(labels), dtype=np.int64) if groups is None else np.asarray(groups)
    wins, pairs = np.zeros(len(weights)), np.zeros(len(weights))
    for group in np.unique(groups):
        mine = np.flatnonzero(groups == group)
        order = mine[np.argsort(scores[mine], kind="stable")]
        positive = labels[order] == 1
        # Tied scores form one group; a positive beats the negatives of lower ties and ties with its own.
        starts = np.flatnonzero(np.r_[True, np.diff(scores[order]) > 0])
        negatives = np.add.reduceat(np.where(positive, 0.0, weights[:, order]), starts, axis=1)
        positives = np.add.reduceat(np.where(positive, weights[:, order], 0.0), starts, axis=1)
        wins += (positives * (np.cumsum(negatives, axis=1) - negatives / 2)).sum(1)
        pairs += positives.sum(1) * negatives.sum(1)
    return wins / pairs


def subject_bootstrap_interval(labels: np.ndarray, scores: np.ndarray, subjects: np.ndarray, resamples: int,
                               seed: int, level: float = 0.95, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile interval of the AUROC (within ``groups``, see :func:`weighted_aurocs`) over
    resamples of subjects, within each set: a subject's slices are alike, so resampling slices
    (or DeLong's variance, which counts each slice as independent) would make the interval too
    narrow on a cohort of several slices a subject."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(labels)))
    for label in (0, 1):
        mine = np.flatnonzero(labels == label)
        names, of_record = np.unique(subjects[mine], return_inverse=True)
        # How often each subject is drawn in each resample; its records count as often.
        drawn = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=resamples)
        weights[:, mine] = drawn[:, of_record]
    with np.errstate(invalid="ignore", divide="ignore"):
        aurocs = weighted_aurocs(labels, scores, weights, groups)
    # On a few subjects a side a resample can leave no fold holding both sets: it has no pair to
    # count and says nothing about the AUROC, so the interval is over the resamples that do.
    aurocs = aurocs[np.isfinite(aurocs)]
    if not len(aurocs):
        return math.nan, math.nan
    low, high = np.quantile(aurocs, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def classifier_two_sample_tests(comparisons: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], folds: int = 5,
                                steps: int = 120, batch: int = 32, resamples: int = 1000,
                                seed: int = 0) -> list[TwoSampleTest]:
    """Classifier two-sample tests (C2ST; Lopez-Paz and Oquab, ICLR 2017), one per comparison of
    (images (N, 2, H, W), labels 0 and 1 for the two sets, each record's subject): a small CNN
    learns to tell the sets apart on all folds but one, ``steps`` steps of ``batch`` pairs, half
    from each set, and scores the fold it did not see; the AUROC of those scores, over pairs
    within a fold, is 0.5 where the sets cannot be told apart and 1 where they always can. Folds are split by subject
    (:func:`subject_folds`). Each fold's network starts from the same seed in every comparison and
    the first set's subjects fall in the same folds, so comparisons that share a first set differ
    only in the second, and a comparison's figures do not depend on the others. The trainings run
    side by side, so the figures do not depend on the number of cores either."""
    prepared, jobs = [], []
    for images, labels, subjects in comparisons:
        labels, subjects = np.asarray(labels), np.asarray(subjects)
        fold = subject_folds(subjects, labels, folds, seed)
        pairs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if pairs.shape[-1] > TWO_SAMPLE_INPUT_SIZE:
            pairs = F.adaptive_avg_pool2d(pairs, TWO_SAMPLE_INPUT_SIZE)
        targets = torch.from_numpy(labels.astype(np.int64))
        prepared.append((labels, subjects, fold))
        for k in range(folds):
            job_seed = seed + k
            # Initialised here, one after the other: torch's global generator is shared by threads.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(job_seed)
                network = AttributeNet({"second": 2}, TWO_SAMPLE_WIDTH)
            jobs.append((network, pairs, targets, fold == k, job_seed))

    def fit(job: tuple[AttributeNet, torch.Tensor, torch.Tensor, np.ndarray, int]) -> np.ndarray:
        network, pairs, targets, held, job_seed = job
        train = torch.from_numpy(np.flatnonzero(~held))
        by_set = [train[targets[train] == label] for label in (0, 1)]

        def loss(generator: torch.Generator) -> torch.Tensor:
            index = torch.cat([rows[torch.randint(0, len(rows), (batch // 2,), generator=generator)]
                               for rows in by_set])
            x = pairs[index].contiguous(memory_format=torch.channels_last)
            return F.cross_entropy(network(x)["second"], targets[index])

        fit_steps(network, loss, steps, "two-sample classifier", False, torch.Generator().manual_seed(job_seed))
        with torch.no_grad():
            x = pairs[torch.from_numpy(np.flatnonzero(held))].contiguous(memory_format=torch.channels_last)
            return network.eval()(x)["second"].softmax(1)[:, 1].double().numpy()

    fitted = iter(side_by_side(fit, jobs))
    results = []
    for labels, subjects, fold in prepared:
        scores = np.empty(len(labels))
        for k in range(folds):
            scores[fold == k] = next(fitted)
        # Pairs within a fold only: each fold's network ranks the records it scored, and a network
        # that reads a whole fold higher would otherwise move the figure with that fold's mix of
        # sets, which differs from fold to fold when subjects have different numbers of slices.
        results.append(TwoSampleTest(float(weighted_aurocs(labels, scores, np.ones((1, len(labels))), fold)[0]),
                                     subject_bootstrap_interval(labels, scores, subjects, resamples, seed,
                                                                groups=fold),
                                     scores))
    return results
