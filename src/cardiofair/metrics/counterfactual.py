"""Prompt effects measured apart from realism: the same mask and seed drawn under two prompts
that differ in one attribute only, read by the attribute judge.

Per-image prompt fidelity mixes two questions: does the image carry the prompted attribute, and
can the judge read it through the generator's texture. Drawing one real test mask with one seed
as, say, "Female, ..." and "Male, ..." and asking how often the judge's reading moves between the
two versions answers the first alone: the mask, the seed and every other word are shared, so
whatever moves was drawn because of the prompt.

A figure needs its reference. On the phantom, a real subject can be drawn both ways too: the
cues outside the heart (chest, breasts, fat) of the other sex or of another BMI, with the same
heart, mask, pose and noise (:func:`cardiofair.data.phantom.phantom_subject`). Those pairs,
prepared like the dataset and read by the same judge, say how far real cues move the judge.
Age and diagnosis have no such reference: the phantom's cues for them lie in the heart, i.e.
in the mask, which a counterfactual keeps fixed.

For each attribute, over its pairs (version a, version b):

- ``moved``: share of pairs whose predicted class differs between the versions;
- ``follows_both``: share where the judge reads a in version a and b in version b;
- ``probability_shift``: mean rise of the judge's probability for the prompted class when the
  prompt (or cue) changes to it, averaged over both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cardiofair.data.prepare import PhantomModel, phantom_model, prepare_phantom_subject
from cardiofair.metrics.evaluators import Evaluators
from cardiofair.prompts import DEFAULT_SCHEMA, PromptSchema, prompt_from_attributes

# The two values each attribute is drawn as: the report's examples, and for sex and diagnosis
# the only two.
ATTRIBUTE_PAIRS: dict[str, tuple[str, str]] = {"sex": ("Female", "Male"), "age": ("40s", "70s"),
                                               "bmi": ("normal", "obese"), "diagnosis": ("healthy", "heart failure")}
# A phantom subject is redrawn with the fat of a BMI in the middle of each WHO class.
CUE_BMI = {"underweight": 17.5, "normal": 22.0, "overweight": 27.5, "obese": 33.0}
NOT_DRAWABLE = ("the phantom cannot draw one subject both ways with the mask fixed: its {attribute} cues lie in "
                "the heart, i.e. in the mask")


def pair_readings(evaluators: Evaluators, attribute: str, values: tuple[str, str], first: np.ndarray,
                  second: np.ndarray) -> dict[str, Any]:
    """How the judge's reading of ``attribute`` moves between two versions of the same images,
    ``first`` showing ``values[0]`` and ``second`` ``values[1]`` (both (N, 2, H, W) in [0, 1])."""
    classes = evaluators.classes[attribute]
    a, b = classes.index(values[0]), classes.index(values[1])
    p_first, p_second = (evaluators.probabilities(images)[attribute] for images in (first, second))
    read_first, read_second = p_first.argmax(1), p_second.argmax(1)
    return {"values": list(values), "n_pairs": len(first), "status": "ok",
            "moved": float(np.mean(read_first != read_second)),
            "follows_both": float(np.mean((read_first == a) & (read_second == b))),
            "probability_shift": float(np.mean((p_first[:, a] - p_second[:, a] + p_second[:, b] - p_first[:, b]) / 2))}


def _unreadable(classes: Mapping[str, Sequence[str]], attribute: str, values: tuple[str, str]) -> str | None:
    if not classes:
        # One reason for every attribute, so that the summary says it once.
        return "the attribute judge was left out (no prompt attribute had two known values in the training split)"
    if attribute not in classes:
        return f"the judge does not read {attribute} (it had fewer than two known values in the training split)"
    missing = [v for v in values if v not in classes[attribute]]
    return f"the judge never saw {attribute} {', '.join(missing)} in the training split" if missing else None


def choose_pairs(attributes: pd.DataFrame, count: int, seed: int) -> np.ndarray:
    """Positions of up to ``count`` records with every attribute known, drawn with ``seed``:
    the masks every attribute's pairs share."""
    complete = np.flatnonzero(~attributes.eq("unknown").any(axis=1).to_numpy())
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(complete, min(count, len(complete)), replace=False))


@dataclass
class DrawnPairs:
    """Per attribute, the generator's two versions of the same masks (``values[0]``'s, then
    ``values[1]``'s), or why it was not drawn. Drawing needs no trained judge, only the classes it
    will read, so it can run while the judge trains."""

    versions: dict[str, tuple[np.ndarray, np.ndarray]]
    skipped: dict[str, str]


class PairDrawing:
    """What :func:`draw_pairs` draws, in parts that may run on different threads (each part's
    images depend only on the part, never on where or when it runs): :meth:`parts`, then
    :meth:`result`."""

    def __init__(self, generator: Any, classes: Mapping[str, Sequence[str]], masks: np.ndarray,
                 attributes: pd.DataFrame, seed: int, sampler: Any = None, progress: bool = False):
        info = generator.info.get("prompt_schema")
        schema = PromptSchema.from_dict(info) if info else DEFAULT_SCHEMA
        base = attributes[[a for a in schema.attributes if a in attributes.columns]].to_dict("records")
        self.skipped: dict[str, str] = {}
        self.wanted: dict[str, list[list[tuple[int, str]]]] = {}
        for attribute, values in ATTRIBUTE_PAIRS.items():
            reason = _unreadable(classes, attribute, values)
            if attribute not in schema.attributes:
                reason = f"the generator's prompts have no {attribute}"
            if reason or not len(masks):
                self.skipped[attribute] = reason or "no test masks"
                continue
            self.wanted[attribute] = [[(i, prompt_from_attributes({**row, attribute: value}, schema)) for i, row in
                                       enumerate(base)] for value in values]
        # A record's own prompt is one version of several attributes' pairs: each (mask, prompt) is
        # drawn once, with the mask's seed, and shared.
        self.unique = list(dict.fromkeys(key for versions in self.wanted.values() for keys in versions for key in keys))
        self.generator, self.masks, self.seed, self.sampler, self.progress = generator, masks, seed, sampler, progress
        self.drawn: dict[tuple[int, str], np.ndarray] = {}

    def parts(self, count: int) -> list[Callable[[], None]]:
        """The drawing split into up to ``count`` parts of about equal size, to run in any order."""
        return [lambda keys=keys: self._draw(list(keys)) for keys in np.array_split(np.arange(len(self.unique)), count)
                if len(keys)]

    def _draw(self, rows: list[int]) -> None:
        keys = [self.unique[r] for r in rows]
        images = self.generator.sample(self.masks[[i for i, _ in keys]], [p for _, p in keys],
                                       [self.seed * 100003 + i for i, _ in keys], self.sampler, progress=self.progress)
        self.drawn.update(zip(keys, images))

    def result(self) -> DrawnPairs:
        """The drawn pairs, once every part has run."""
        return DrawnPairs({attribute: tuple(np.stack([self.drawn[k] for k in keys]) for keys in versions)
                           for attribute, versions in self.wanted.items()}, self.skipped)


def draw_pairs(generator: Any, classes: Mapping[str, Sequence[str]], masks: np.ndarray, attributes: pd.DataFrame,
               seed: int, sampler: Any = None, progress: bool = False) -> DrawnPairs:
    """Each mask drawn by ``generator`` (a :class:`~cardiofair.diffusion.sample.TrainedGenerator`)
    with ``sampler`` (its :class:`~cardiofair.diffusion.presets.SamplerSettings`; None: the
    model's own) as both values of every attribute the judge reads (``classes``), the rest of the
    prompt being the record's own and the seed shared by both versions."""
    drawing = PairDrawing(generator, classes, masks, attributes, seed, sampler, progress)
    for part in drawing.parts(1):
        part()
    return drawing.result()


def read_pairs(evaluators: Evaluators, pairs: DrawnPairs) -> dict[str, dict[str, Any]]:
    """Per attribute, how the judge's reading moves between the drawn versions (:func:`pair_readings`)."""
    effects = {attribute: {"values": list(ATTRIBUTE_PAIRS[attribute]), "n_pairs": 0, "status": reason}
               for attribute, reason in pairs.skipped.items()}
    for attribute, (first, second) in pairs.versions.items():
        effects[attribute] = pair_readings(evaluators, attribute, ATTRIBUTE_PAIRS[attribute], first, second)
    return {attribute: effects[attribute] for attribute in ATTRIBUTE_PAIRS}


def phantom_effects(real_root: Path, rows: pd.DataFrame, evaluators: Evaluators) -> dict[str, dict[str, Any]]:
    """Per attribute, the judge's readings of the real phantom subjects of ``rows`` drawn with the
    cues of both values (sex; BMI through the fat of a mid-class BMI), prepared as the dataset
    was; why not, where the dataset is not the phantom or the attribute cannot be drawn so."""
    model = phantom_model(real_root)
    effects: dict[str, dict[str, Any]] = {}
    for attribute, values in ATTRIBUTE_PAIRS.items():
        reason = _unreadable(evaluators.classes, attribute, values)
        if model is None:
            reason = "the real dataset is not the phantom: no subject can be drawn both ways"
        elif attribute not in ("sex", "bmi"):
            reason = NOT_DRAWABLE.format(attribute=attribute)
        if reason or rows.empty:
            effects[attribute] = {"values": list(values), "n_pairs": 0, "status": reason or "no test subjects"}
            continue
        cues = [{"cue_sex": value} if attribute == "sex" else {"cue_bmi": CUE_BMI[value]} for value in values]
        first, second = (_phantom_versions(model, rows, cue) for cue in cues)
        effects[attribute] = pair_readings(evaluators, attribute, values, first, second)
    return effects


def _phantom_versions(model: PhantomModel, rows: pd.DataFrame, cue: Mapping[str, Any]) -> np.ndarray:
    """The images of the phantom records ``rows`` drawn with ``cue`` and prepared as the dataset
    was (subject ids name the index: ``phantom-000123``)."""
    images = []
    for row in rows.to_dict("records"):
        index = int(re.fullmatch(r"phantom-(\d+)", str(row["subject_id"])).group(1))
        drawn = prepare_phantom_subject(index, model.seed, model.config, model.settings, **cue)
        images.append(next(r.image for r in drawn if r.meta["record_id"] == row["record_id"]))
    return np.stack(images)


def prompt_effects(evaluators: Evaluators, real_root: Path, rows: pd.DataFrame, drawn: DrawnPairs | None,
                   seed: int) -> dict[str, Any]:
    """The ``prompt_effects`` section of ``synthetic_quality.json``: per attribute, the generator's
    pairs (``drawn`` on the masks of the real test records ``rows``; None: no generator given)
    beside the phantom's (``real_reference``) on the same records."""
    if drawn is None:
        synthetic = {a: {"values": list(v), "n_pairs": 0, "status": "no generator given (--model)"}
                     for a, v in ATTRIBUTE_PAIRS.items()}
    else:
        synthetic = read_pairs(evaluators, drawn)
    reference = phantom_effects(real_root, rows, evaluators)
    return {"pairs": len(rows), "seed": seed,
            "attributes": {a: {"synthetic": synthetic[a], "real_reference": reference[a]} for a in ATTRIBUTE_PAIRS}}
