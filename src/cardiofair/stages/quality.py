"""`cardiofair quality`: the synthetic dataset judged beside real references
(:func:`cardiofair.metrics.quality.evaluate_synthetic`), its result and its printed table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cardiofair.metrics.quality import evaluate_synthetic
from cardiofair.metrics.quality_metrics import shown_together, summary_line
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
    """A compact table: each metric's measures on the synthetic set beside their real reference."""
    lines = [summary_line("measure", "synthetic", "real ref")]
    lines += [line for metrics in shown_together() for metric in metrics
              for line in metric.summary(result.section(metric.name))]
    cells = result.section("realism")["cells"]
    measured = sum(scope["status"] == "ok" for scope in cells.values())
    lines.append(f"cells: {len(cells)} synthetic cells, {measured} with enough images for distances "
                 f"(see realism_by_cell.csv)")
    return "\n".join(lines)
