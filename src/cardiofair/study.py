"""`cardiofair run`: the whole study, one stage after another, resumable.

Each stage is called directly (:meth:`cardiofair.stages.Stage.run`) with its section of the
configuration and writes to ``runs/<name>/<stage>/``. When a stage finishes,
``runs/<name>/.stages/<stage>.json`` records the equivalent command line (what a reader runs to
redo that stage by hand), a fingerprint of it and of every upstream stage's, and its duration. A
stage is skipped when its record exists with the same fingerprint: a run killed halfway
continues from the stage it was in (training from its last checkpoint, generation from its last
batch), and a changed setting redoes its stage and everything downstream, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from cardiofair import __version__
from cardiofair.config import StudyConfig, config_yaml, resolve
from cardiofair.errors import CardiofairError
from cardiofair.io import atomic_write
from cardiofair.options import input_paths
from cardiofair.results import MANIFEST, PlanResult, ReportResult
from cardiofair.settings import DRAWN_MASK_POLICY
from cardiofair.stages import FAIRNESS, MASKS, REPORT, STAGES, Stage

STAGE_NAMES = tuple(stage.name for stage in STAGES)


class StageFailed(CardiofairError):
    """A stage stopped on a problem with the study's input or settings (named in the message)."""


@dataclass
class Study:
    """A configuration bound to its run folder; knows every stage's settings, paths and command."""

    config: StudyConfig
    base: Path

    @property
    def folder(self) -> Path:
        return resolve(self.base, self.config.folder)

    def path(self, stage: str) -> Path:
        return self.folder / stage

    def settings(self, stage: Stage) -> Any:
        """The stage's section of the configuration, its input paths resolved against the file."""
        section = getattr(self.config, stage.name)
        if stage.name == "generate":
            # The fairness stage takes each dose's records from the one synthetic dataset.
            section = replace(section, dose=max(section.dose, *self.config.fairness.doses))
        return replace(section, **{k: str(resolve(self.base, v)) for k, v in input_paths(section).items()})

    def paths(self, stage: Stage) -> dict[str, Path | None]:
        """Where the stage reads and writes in the run folder: each stage reads its upstream
        stages' folders."""
        data, model, plan, synthetic = (self.path("prepare"), self.path("train"), self.path("plan") / PlanResult.FILE,
                                        self.path("generate"))
        layout: dict[str, dict[str, Path | None]] = {
            "prepare": {"out": data},
            "split": {"dataset": data},
            "train": {"dataset": data, "out": model},
            "masks": {"dataset": data, "out": self.path("masks")},
            "plan": {"dataset": data, "out": plan},
            "generate": {"model": model, "dataset": data, "plan": plan, "out": synthetic,
                         "masks": self.path("masks") if self.needed(MASKS) else None},
            "quality": {"real": data, "synthetic": synthetic, "out": self.path("quality"),
                        "evaluators": self.folder / "evaluators", "model": model},
            "fairness": {"real": data, "synthetic": synthetic, "out": self.path("fairness")},
            "report": {"real": data, "synthetic": synthetic, "model": model, "quality": self.path("quality"),
                       "fairness": self.path("fairness") if self.needed(FAIRNESS) else None, "plan": plan,
                       "metadata": self.folder / "run.json",
                       "out": self.path("report")},
        }
        return layout[stage.name]

    def needed(self, stage: Stage) -> bool:
        """Whether the study runs the stage (:meth:`not_needed` says why not)."""
        return self.not_needed(stage) is None

    def not_needed(self, stage: Stage) -> str | None:
        """Why the study leaves the stage out, or None when it runs it: the mask generator runs
        only when the plan draws masks (a cohort of near-identical masks has no shape to learn,
        and borrowing needs none); the fairness experiment only on a cohort with a diagnosis,
        known once it is prepared (its classifiers detect a diagnosis)."""
        if stage is MASKS and self.config.plan.mask_policy != DRAWN_MASK_POLICY:
            return f"plan.mask_policy is {self.config.plan.mask_policy}, not {DRAWN_MASK_POLICY}"
        if stage is FAIRNESS and (self.path("prepare") / MANIFEST).is_file():
            # Imported here: a study file is checked, and --dry-run prints, before pandas loads.
            from cardiofair.data.records import read_manifest
            from cardiofair.data.summary import no_diagnosis_reason

            return no_diagnosis_reason(read_manifest(self.path("prepare")))
        return None

    def command_line(self, stage: Stage) -> list[str]:
        """The command that runs the stage by hand, as the study runs it."""
        return stage.command_line(self.settings(stage), self.paths(stage))

    def fingerprint(self, stage: Stage) -> str:
        """Changes when the stage's command line or any upstream stage's does."""
        digest = hashlib.sha256(__version__.encode())
        for upstream in STAGES[:STAGES.index(stage) + 1]:
            digest.update(json.dumps(self.command_line(upstream)).encode())
        return digest.hexdigest()[:16]

    def record_path(self, stage: Stage) -> Path:
        return self.folder / ".stages" / f"{stage.name}.json"

    def finished(self, stage: Stage) -> dict[str, Any] | None:
        """The stage's record when it finished with the current settings, else None."""
        try:
            record = json.loads(self.record_path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if record.get("fingerprint") == self.fingerprint(stage) else None


def run_study(study: Study, force: Sequence[str] = (), dry_run: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Run every stage that is not already finished with the same settings; return the report."""
    unknown = [s for s in force if s not in STAGE_NAMES]
    if unknown:
        raise CardiofairError(f"--force: unknown stage(s) {unknown}; stages are {', '.join(STAGE_NAMES)}")
    if not dry_run:
        study.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(study.folder / "config.yaml", config_yaml(study.config))
    redo = False
    for index, stage in enumerate(STAGES):
        redo = redo or stage.name in force
        record = None if redo else study.finished(stage)
        step = f"[{index + 1}/{len(STAGES)}] {stage.name}"
        reason = study.not_needed(stage)
        if reason is not None:
            log(f"{step}: not needed ({reason})")
            continue
        if record is not None:
            log(f"{step}: done earlier ({record['seconds']:.0f} s), skipped")
            continue
        # Once a stage is redone, everything after it must be redone too.
        redo = True
        log(f"{step}: {shlex.join(study.command_line(stage))}")
        if dry_run:
            continue
        study.record_path(stage).unlink(missing_ok=True)
        if stage is REPORT:
            atomic_write(study.folder / "run.json", json.dumps(run_metadata(study), indent=2) + "\n")
        started = time.monotonic()
        try:
            # An earlier attempt of the stage may be in its folder: continue it where the stage
            # can (train, generate), replace it otherwise.
            result = stage.run(study.settings(stage), study.paths(stage), resume=True, overwrite=True)
        except CardiofairError as error:
            raise StageFailed(f"stage {stage.name}: {error}\nFix the problem and run the same command again: "
                              "finished stages are kept.") from error
        seconds = time.monotonic() - started
        log(stage.summary(result, study.paths(stage)))
        study.record_path(stage).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(study.record_path(stage),
                     json.dumps({"stage": stage.name, "fingerprint": study.fingerprint(stage),
                                 "command": study.command_line(stage), "seconds": round(seconds, 1),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
        if stage is REPORT:
            shutil.copyfile(result.page, study.folder / ReportResult.FILE)
    return study.folder / ReportResult.FILE


def stage_times(study: Study) -> dict[str, float]:
    """Seconds each finished stage took."""
    times = {}
    for stage in STAGES:
        record = study.finished(stage)
        if record is not None:
            times[stage.name] = record["seconds"]
    return times


def run_metadata(study: Study) -> dict[str, Any]:
    """What a reader needs to reproduce the run: versions, seeds, hardware, the command of each
    stage and its time."""
    import importlib.metadata as metadata

    import torch

    versions = {"cardiofair": __version__, "python": sys.version.split()[0]}
    for package in ("torch", "diffusers", "transformers", "accelerate", "fairlearn", "numpy", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    c = study.config
    return {
        "study": c.name, "folder": str(study.folder), "versions": versions,
        "seeds": {stage.name: getattr(c, stage.name).seed for stage in STAGES
                  if hasattr(getattr(c, stage.name), "seed")},
        "hardware": {"platform": platform.platform(), "processor": platform.machine(),
                     "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"},
        "seconds_per_stage": stage_times(study),
        "commands": {stage.name: shlex.join(study.command_line(stage)) for stage in STAGES},
        "config": c.to_dict(),
    }
