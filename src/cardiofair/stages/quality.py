"""`cardiofair quality`: the synthetic dataset judged beside real references
(:func:`cardiofair.metrics.quality.evaluate_synthetic`), its result and its printed table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cardiofair.metrics.quality import evaluate_synthetic
from cardiofair.report.tables import number, synthetic_and_reference
from cardiofair.results import QualityResult
from cardiofair.settings import QualitySettings

Result = QualityResult


def run(settings: QualitySettings, *, real: str | os.PathLike, synthetic: str | os.PathLike,
        out: str | os.PathLike, evaluators: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
        overwrite: bool = False, progress: bool = True) -> QualityResult:
    """`cardiofair quality`: :func:`evaluate_synthetic` with the stage's paths."""
    return evaluate_synthetic(real, synthetic, out, settings, evaluators_dir=evaluators, overwrite=overwrite,
                              progress=progress, model_dir=model)


def summary(result: QualityResult, paths: Any) -> str:
    """The compact table and where the full evaluation is."""
    return f"{summary_table(result)}\nwrote {Path(paths['out']) / QualityResult.FILE}"


def summary_table(result: QualityResult) -> str:
    """A compact table: each measure on the synthetic set beside its real reference."""
    lines = [f"{'measure':42s} {'synthetic':>10s} {'real ref':>10s}"]
    realism = result.realism["overall"]
    if realism["status"] == "ok":
        n = realism["n_compared"]
        for label, key, scale in ((f"FD-cardiofair (n={n}, {realism['fd_draws']} draws)", "fd", 1.0), ("FD-cardiofair image+mask", "fd_image_mask", 1.0),
                                  ("KD-cardiofair x1000", "kd", 1000.0),
                                  ("MS-SSIM within set (lower = more diverse)", "ms_ssim", 1.0)):
            syn, ref = synthetic_and_reference(realism, key)
            lines.append(f"{label:42s} {number(syn, scale=scale):>10s} {number(ref, scale=scale):>10s}")
    else:
        lines.append(f"realism: {realism['status']}")
    mask = result.mask_fidelity["overall"]
    for structure, value in mask["synthetic"].items():
        lines.append(f"{'Dice ' + structure.replace('_', ' '):42s} {number(value):>10s} "
                     f"{number(mask['real_reference'].get(structure)):>10s}")
    prompt = result.prompt_fidelity["overall"]
    for name, value in prompt["synthetic"].items():
        label = f"prompt {name} balanced acc. (chance {prompt['chance'][name]:.2f})"
        lines.append(f"{label:42s} {number(value):>10s} {number(prompt['real_reference'].get(name)):>10s}")
    if "reference" in prompt:
        lines.append(f"  (prompt reference: {prompt['reference']}; real test, all cells: "
                     + ", ".join(f"{name} {number(value)}" for name, value in prompt["real_test"].items()) + ")")
    for name, effect in result.prompt_effects["attributes"].items():
        lines.append(f"{'prompt effect ' + name + ' (share of pairs moved)':42s} "
                     f"{number(effect['synthetic'].get('moved')):>10s} {number(effect['real_reference'].get('moved')):>10s}")
    privacy = result.privacy["overall"]
    for space in ("pixel", "encoder"):
        syn, ref = synthetic_and_reference(privacy, "copy_rate", space)
        lines.append(f"{'copy rate (' + space + ')':42s} {number(syn):>10s} {number(ref):>10s}")
    masks = result.mask_geometry
    if masks:
        lines.append(f"{'masks passing the anatomical checks':42s} {number(masks['validity']['valid_share']):>10s} "
                     f"{'':>10s}")
        novelty = masks["novelty"]
        lines.append(f"{'mask nearest-training distance, median':42s} "
                     f"{number(novelty['median_nearest_training_distance']['synthetic']):>10s} "
                     f"{number(novelty['median_nearest_training_distance']['real_reference']):>10s}")
        lines.append(f"{'mask copy rate':42s} {number(novelty['copy_rate']['synthetic']):>10s} "
                     f"{number(novelty['copy_rate']['real_reference']):>10s}")
        for cell, scope in masks["cells"].items():
            truth = scope.get("distance_to_phantom_truth")
            if truth:
                lines.append(f"{'mask geometry vs phantom truth ' + cell:42s} {number(truth['synthetic']):>10s} "
                             f"{number(truth['real_reference']):>10s}")
    cells = result.realism["cells"]
    measured = sum(scope["status"] == "ok" for scope in cells.values())
    lines.append(f"cells: {len(cells)} synthetic cells, {measured} with enough images for distances "
                 f"(see realism_by_cell.csv)")
    return "\n".join(lines)
