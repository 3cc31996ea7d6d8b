"""`cardiofair prepare`: the phantom or a real cohort, as a prepared dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cardiofair.data import EXCLUDED, PREPARATION
from cardiofair.data.phantom import PhantomConfig, scenario_config
from cardiofair.data.prepare import PrepareResult, prepare_phantom, prepare_sources
from cardiofair.data.summary import summary_text
from cardiofair.errors import SettingsError
from cardiofair.settings import PHANTOM, PrepareSettings

Result = PrepareResult


def run(settings: PrepareSettings, *, out: str | os.PathLike, overwrite: bool = False,
        progress: bool = True) -> PrepareResult:
    """`cardiofair prepare`: the phantom or a real cohort, as a prepared dataset at ``out``."""
    run_options = {"overwrite": overwrite, "strict": settings.strict, "workers": settings.workers,
                   "progress": progress}
    if settings.source == PHANTOM:
        return prepare_phantom(settings.n, settings.seed, out, _phantom_config(settings), settings, **run_options)
    from cardiofair.data.sources import discover

    options = {"metadata": settings.metadata, "columns": settings.columns, "label_order": settings.label_order,
               "required": settings.require}
    options = {k: v for k, v in options.items() if v is not None}
    sources = discover(settings.source, settings.root, **options)
    source_settings = {"source": settings.source, "root": str(settings.root),
                       **{k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
                       "pixel_spacing_mm": settings.pixel_spacing_mm}
    return prepare_sources(sources, out, settings, source_settings, **run_options)


def _phantom_config(settings: PrepareSettings) -> PhantomConfig:
    """The phantom's settings: its scenario's, with its YAML file (if any) over them, at the
    preparation's size and field of view."""
    try:
        loaded = yaml.safe_load(Path(settings.phantom_config).read_text()) if settings.phantom_config else {}
        return scenario_config(settings.scenario, **{**(loaded or {}), "size": settings.size, "fov_mm": settings.fov_mm})
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise SettingsError("phantom_config", f"{settings.phantom_config}: {error}") from None


def summary(result: PrepareResult, paths: Any) -> str:
    """What was written and excluded, and the dataset's subgroup table."""
    excluded = f" (reasons in {result.out / EXCLUDED})" if result.excluded else ""
    warned = (f"; {len(result.warnings)} warning(s), listed in {result.out / PREPARATION}, e.g. "
              f"{result.warnings[0]}" if result.warnings else "")
    return (f"wrote {result.n_records} records from {result.n_subjects} subjects to {result.out}; "
            f"{len(result.excluded)} excluded{excluded}{warned}\n\n{summary_text(result.out)}")

