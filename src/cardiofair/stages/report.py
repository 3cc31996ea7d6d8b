"""`cardiofair report`: the whole study on one page (:func:`cardiofair.report.write_report`).

The stage is where the trained generator is opened: its card, weights hash and parameter counts
are read here, and the model is loaded only if the page draws its counterfactual row, so that
the report package itself never imports model code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors import safe_open

from cardiofair.report import COUNTERFACTUALS, ReportError, write_report
from cardiofair.report.cards import GeneratorFacts
from cardiofair.results import GenerateResult, ReportResult, TrainResult
from cardiofair.settings import ReportSettings

Result = ReportResult


def run(settings: ReportSettings, *, real: str | os.PathLike, out: str | os.PathLike,
        synthetic: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
        quality: str | os.PathLike | None = None, fairness: str | os.PathLike | None = None,
        plan: str | os.PathLike | None = None, metadata: str | os.PathLike | None = None,
        overwrite: bool = False) -> ReportResult:
    """`cardiofair report`: :func:`write_report` with the stage's paths and settings."""
    try:
        text = Path(metadata).read_text() if metadata else None
    except OSError as error:
        raise ReportError(f"--metadata {metadata} cannot be read: {error}") from None
    try:
        run_metadata = None if text is None else json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"--metadata {metadata} is not valid JSON: {error}") from None
    generator = None if model is None else generator_facts(model, synthetic)
    write_report(out, real=real, synthetic=synthetic, generator=generator,
                 quality=quality, fairness=fairness, plan=plan, metadata=run_metadata, licence=settings.licence,
                 counterfactual_prompts=COUNTERFACTUALS if settings.counterfactuals else {}, seed=settings.seed,
                 overwrite=overwrite)
    return ReportResult.load(out)


def summary(result: ReportResult, paths: Any) -> str:
    """What the report wrote."""
    return f"wrote {result.page}, {result.model_card}, {result.datasheet} and {result.figures}"


def generator_facts(model: str | os.PathLike, synthetic: str | os.PathLike | None = None) -> GeneratorFacts:
    """What the report shows of the trained generator in ``model``; its weights are loaded on
    the first drawing, not before. With ``synthetic`` (a `cardiofair generate` dataset), the
    counterfactual row is drawn and described with the sampler that dataset was drawn with."""
    from cardiofair.diffusion import quiet_model_loading
    from cardiofair.diffusion.presets import SamplerSettings, guide_step
    from cardiofair.diffusion.sample import TrainedGenerator, model_hash
    from cardiofair.diffusion.validation import LossJump

    quiet_model_loading()
    trained = TrainResult.load(model)
    folder, card = trained.folder, trained.card
    settings = (card.get("training") or {}).get("settings") or {}
    jump = (card.get("training") or {}).get("loss_jump")
    share, total = settings.get("guide_at"), settings.get("max_steps")
    # The row shows what the synthetic records look like: a run with attribute guidance, say,
    # draws otherwise than the model's defaults.
    sampler = SamplerSettings(**card["sampling"]) if card.get("sampling") else None
    if sampler is not None and synthetic is not None:
        sampler = GenerateResult.load(synthetic).drawn_with(sampler)
    loaded: list[TrainedGenerator] = []

    def draw(masks: np.ndarray, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        if not loaded:
            loaded.append(TrainedGenerator(folder))
        return loaded[0].sample(masks, list(prompts), list(seeds), sampler)

    return GeneratorFacts(trained, model_hash(folder), _parameter_counts(folder),
                          sampler.describe() if sampler else "",
                          guide_step(share, int(total)) if share is not None and total else None, draw,
                          LossJump(**jump).describe() if jump else None)


def _parameter_counts(model_dir: Path) -> dict[str, int]:
    """Parameters per component, read from the safetensors headers (no weights loaded)."""
    counts = {}
    for path in sorted(model_dir.glob("*/*.safetensors")):
        with safe_open(str(path), framework="numpy") as weights:
            total = sum(int(np.prod(weights.get_slice(name).get_shape())) for name in weights.keys())
        counts[path.parent.name] = counts.get(path.parent.name, 0) + total
    return counts
