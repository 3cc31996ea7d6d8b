"""The pipeline's stages, each declared once: its name, its settings, the paths it reads and
writes, and the module that runs it.

A stage's name is also its command (``cardiofair plan``), its section of a study file
(``plan:``), its folder under ``runs/<name>/`` and its module here (:mod:`cardiofair.stages.plan`).
Every stage module has ``run(settings, *, <paths>, overwrite, ...)`` returning its ``Result``
and ``summary(result, paths)``; the command line and ``cardiofair run`` both call them through
:meth:`Stage.run` and :meth:`Stage.summary`, and :meth:`Stage.command_line` writes the command
that does the same by hand.

The stages sit on top: they use the library packages (``data``, ``diffusion``, ``masks``,
``metrics``, ``downstream``, ``report``), which never import a stage.

Pure Python: modules are imported only when a stage runs.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

from cardiofair.options import command_line
from cardiofair.settings import (
    FairnessSettings,
    GenerateSettings,
    MaskSettings,
    PlanSettings,
    PrepareSettings,
    QualitySettings,
    ReportSettings,
    SplitSettings,
    TrainOptions,
)


@dataclass(frozen=True)
class PathArgument:
    """A file or folder a stage reads or writes: ``positional`` on the command line, else
    ``--name``; ``optional`` ones may be left out."""

    name: str
    help: str
    positional: bool = False
    optional: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    settings: type
    module: str
    paths: tuple[PathArgument, ...]
    # Whether an interrupted run continues where it stopped: "always" when run again (generate),
    # "on request" with --resume (train), or "never" (the others start again; their output
    # appears all at once, so there is nothing half-done to continue).
    resumes: str = "never"
    quiet: bool = True

    def run(self, settings: Any, paths: Mapping[str, os.PathLike | str | None], *, resume: bool = False,
            overwrite: bool = False, progress: bool = True) -> Any:
        """Run the stage's module on ``settings`` with these paths (see :attr:`paths`)."""
        module = importlib.import_module(self.module)
        controls: dict[str, Any] = {"overwrite": overwrite}
        if self.resumes != "never":
            controls["resume"] = resume
        if self.quiet:
            controls["progress"] = progress
        return module.run(settings, **{p.name: paths.get(p.name) for p in self.paths}, **controls)

    def command_line(self, settings: Any, paths: Mapping[str, os.PathLike | str | None]) -> list[str]:
        """The ``cardiofair`` command that runs this stage by hand with these settings and paths."""
        argv = ["cardiofair", self.name, *(str(paths[p.name]) for p in self.paths if p.positional)]
        for path in self.paths:
            if not path.positional and paths.get(path.name) is not None:
                argv += [path.flag, str(paths[path.name])]
        return argv + command_line(settings)

    def summary(self, result: Any, paths: Mapping[str, os.PathLike | str | None]) -> str:
        """What a finished run of the stage prints: what it wrote, and its key figures."""
        return importlib.import_module(self.module).summary(result, paths)


_REAL = PathArgument("real", "the real prepared dataset (split with `cardiofair split`)")
_OUT_DATASET = PathArgument("out", "output dataset directory")

PREPARE = Stage("prepare", PrepareSettings, "cardiofair.stages.prepare", (_OUT_DATASET,))
SPLIT = Stage("split", SplitSettings, "cardiofair.stages.split",
              (PathArgument("dataset", "prepared real dataset; gets a split column", positional=True),), quiet=False)
TRAIN = Stage("train", TrainOptions, "cardiofair.stages.train",
              (PathArgument("dataset", "prepared dataset directory (its training split)", positional=True),
               PathArgument("out", "model directory to write")), resumes="on request")
MASKS = Stage("masks", MaskSettings, "cardiofair.stages.masks",
              (PathArgument("dataset", "prepared dataset directory (its training split)", positional=True),
               PathArgument("out", "mask generator directory to write")))
PLAN = Stage("plan", PlanSettings, "cardiofair.stages.plan",
             (PathArgument("dataset", "prepared real dataset (its training split)", positional=True),
              PathArgument("out", "plan CSV to write")), quiet=False)
GENERATE = Stage("generate", GenerateSettings, "cardiofair.stages.generate",
                 (PathArgument("model", "trained model directory"),
                  PathArgument("dataset", "the prepared real dataset the plan was made from"),
                  PathArgument("plan", "plan CSV"), PathArgument("out", "synthetic dataset directory"),
                  PathArgument("masks", "the mask generator (`cardiofair masks`), for cells whose mask policy is "
                               "synthesized", optional=True)),
                 resumes="always")
QUALITY = Stage("quality", QualitySettings, "cardiofair.stages.quality",
                (_REAL, PathArgument("synthetic", "a generated dataset (`cardiofair generate`)"),
                 PathArgument("out", "output directory"),
                 PathArgument("evaluators", "evaluator cache directory; evaluators are kept in a folder named by a "
                              "hash of the real training and validation images and the training settings (default: "
                              "$CARDIOFAIR_CACHE/evaluators, else ~/.cache/cardiofair/evaluators)", optional=True),
                 PathArgument("model", "the trained generator (`cardiofair train`): draws real test masks under prompts "
                              "that differ in one attribute (prompt effects); without it only the phantom's reference "
                              "pairs are measured", optional=True)))
FAIRNESS = Stage("fairness", FairnessSettings, "cardiofair.stages.fairness",
                 (_REAL, PathArgument("synthetic", "a generated dataset (`cardiofair generate`) for the real+synthetic "
                                      "and synthetic arms, and whose per-cell counts oversample copies", optional=True),
                  PathArgument("plan", "without --synthetic: the plan CSV whose counts oversample copies (default: "
                               "`cardiofair plan`'s default settings on the training split)", optional=True),
                  PathArgument("out", "output directory")))
REPORT = Stage("report", ReportSettings, "cardiofair.stages.report",
               (_REAL, PathArgument("synthetic", "the generated dataset (`cardiofair generate`)", optional=True),
                PathArgument("model", "the trained generator (`cardiofair train`); draws the counterfactual row",
                             optional=True),
                PathArgument("quality", "the output folder of `cardiofair quality`", optional=True),
                PathArgument("fairness", "the output folder of `cardiofair fairness`", optional=True),
                PathArgument("plan", "the synthesis plan CSV (`cardiofair plan`)", optional=True),
                PathArgument("metadata", "a JSON file of run metadata (versions, configuration, seeds, hardware, time "
                             "per stage), shown as given", optional=True),
                PathArgument("out", "output folder")), quiet=False)

STAGES: tuple[Stage, ...] = (PREPARE, SPLIT, TRAIN, MASKS, PLAN, GENERATE, QUALITY, FAIRNESS, REPORT)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
