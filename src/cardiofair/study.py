"""`cardiofair run`: the whole study, one stage after another, resumable.

Each stage is one or two ordinary `cardiofair` commands writing to ``runs/<name>/<stage>/``.
When a stage finishes, ``runs/<name>/.stages/<stage>.json`` records its command lines, a
fingerprint of them and of every upstream stage, and its duration. A stage is skipped when its
record exists with the same fingerprint: a run killed halfway continues from the stage it was
in (training from its last checkpoint, generation from its last batch), and a changed setting
redoes its stage and everything downstream, nothing else.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cardiofair import __version__
from cardiofair.config import StudyConfig, config_yaml, resolve
from cardiofair.data.records import atomic_write
from cardiofair.errors import CardiofairError

STAGES = ("prepare", "train", "plan", "generate", "quality", "fairness", "report")


class StageFailed(CardiofairError):
    """A stage's command exited with an error (its message was printed above)."""


def _options(values: dict[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """Command-line options of a configuration section: ``max_steps: 200`` -> ``--max-steps 200``;
    ``None`` and ``False`` are left out (the command's default), ``True`` is a bare flag."""
    argv: list[str] = []
    for key, value in values.items():
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, ",".join(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [flag, ",".join(f"{k}={v}" for k, v in value.items())]
        else:
            argv += [flag, str(value)]
    return argv


@dataclass
class Study:
    """A configuration bound to its run folder; knows every stage's commands."""

    config: StudyConfig
    base: Path

    @property
    def folder(self) -> Path:
        return resolve(self.base, str(self.config.folder)) if not Path(self.config.runs).is_absolute() \
            else self.config.folder

    def path(self, stage: str) -> Path:
        return self.folder / stage

    def _paths(self, values: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
        return {k: (str(resolve(self.base, v)) if k in keys and v else v) for k, v in values.items()}

    def commands(self, stage: str) -> list[list[str]]:
        """The `cardiofair` command lines of a stage (without --overwrite/--resume)."""
        c, data = self.config, self.path("prepare")
        if stage == "prepare":
            prepare = self._paths(vars(c.data), ("root", "metadata", "phantom_config"))
            phantom_only = ("n", "phantom_config") if c.data.source != "phantom" else ()
            return [["prepare", "--out", str(data), *_options(prepare, skip=("test", "val", "licence") + phantom_only)],
                    ["split", str(data), "--test", str(c.data.test), "--val", str(c.data.val),
                     "--seed", str(c.data.seed)]]
        if stage == "train":
            train = self._paths(vars(c.train), ("weights", "sd_config"))
            if train["num_processes"] == 1:
                train.pop("num_processes")
            return [["train", str(data), "--out", str(self.path("train")), *_options(train)]]
        if stage == "plan":
            plan = self._paths(vars(c.plan), ("targets",))
            return [["plan", str(data), "--out", str(self.path("plan") / "plan.csv"), *_options(plan)]]
        if stage == "generate":
            return [["generate", "--model", str(self.path("train")), "--dataset", str(data), "--plan",
                     str(self.path("plan") / "plan.csv"), "--out", str(self.path("generate")),
                     *_options(vars(c.generate))]]
        if stage == "quality":
            return [["evaluate", "synthetic", "--real", str(data), "--synthetic", str(self.path("generate")),
                     "--model", str(self.path("train")), "--out", str(self.path("quality")),
                     "--evaluators", str(self.folder / "evaluators"), *_options(vars(c.quality))]]
        if stage == "fairness":
            return [["evaluate", "fairness", "--real", str(data), "--synthetic", str(self.path("generate")),
                     "--out", str(self.path("fairness")), *_options(vars(c.fairness))]]
        if stage == "report":
            return [["report", "--real", str(data), "--synthetic", str(self.path("generate")),
                     "--model", str(self.path("train")), "--quality", str(self.path("quality")),
                     "--fairness", str(self.path("fairness")), "--plan", str(self.path("plan") / "plan.csv"),
                     "--out", str(self.path("report")), "--metadata", str(self.folder / "run.json"),
                     "--licence", c.data.licence,
                     "--counterfactuals" if c.report.counterfactuals else "--no-counterfactuals"]]
        raise ValueError(f"unknown stage {stage!r}")

    def fingerprint(self, stage: str) -> str:
        """Changes when the stage's commands or any upstream stage's do."""
        digest = hashlib.sha256(__version__.encode())
        for name in STAGES[:STAGES.index(stage) + 1]:
            digest.update(json.dumps(self.commands(name)).encode())
        return digest.hexdigest()[:16]

    def record_path(self, stage: str) -> Path:
        return self.folder / ".stages" / f"{stage}.json"

    def finished(self, stage: str) -> dict[str, Any] | None:
        """The stage's record when it finished with the current settings, else None."""
        try:
            record = json.loads(self.record_path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if record.get("fingerprint") == self.fingerprint(stage) else None

    def restart_flags(self, stage: str, command: list[str]) -> list[str]:
        """How to start a stage whose output folder may hold an earlier attempt: training and
        generation continue where they stopped; everything else starts again."""
        out = Path(command[command.index("--out") + 1]) if "--out" in command else None
        if out is None or not out.exists():
            return []
        if stage == "train":
            return ["--resume"] if (out / "training" / "checkpoints").is_dir() and \
                not (out / "cardiofair.json").is_file() else ["--overwrite"]
        if stage == "generate":
            return []
        return ["--overwrite"]


def run_study(study: Study, force: Sequence[str] = (), dry_run: bool = False,
              execute: Callable[[list[str]], int] | None = None, log: Callable[[str], None] = print) -> Path:
    """Run every stage that is not already finished with the same settings; return the report."""
    from cardiofair.cli import main

    execute = execute or main
    unknown = [s for s in force if s not in STAGES]
    if unknown:
        raise CardiofairError(f"--force: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if not dry_run:
        study.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(study.folder / "config.yaml", config_yaml(study.config))
    redo = False
    for index, stage in enumerate(STAGES):
        redo = redo or stage in force
        record = None if redo else study.finished(stage)
        if record is not None:
            log(f"[{index + 1}/{len(STAGES)}] {stage}: done earlier ({record['seconds']:.0f} s), skipped")
            continue
        # Once a stage is redone, everything after it must be redone too.
        redo = True
        log(f"[{index + 1}/{len(STAGES)}] {stage}: " + " && ".join(shlex.join(["cardiofair", *c])
                                                                  for c in study.commands(stage)))
        if dry_run:
            continue
        if stage in force and study.record_path(stage).exists():
            study.record_path(stage).unlink()
        started = time.monotonic()
        for command in study.commands(stage):
            if stage == "plan":
                study.path("plan").mkdir(parents=True, exist_ok=True)
            if stage == "report":
                _write_metadata(study)
            code = execute(command + study.restart_flags(stage, command))
            if code:
                raise StageFailed(f"stage {stage} failed (exit {code}); fix the problem and run the same "
                                  f"command again: finished stages are kept")
        seconds = time.monotonic() - started
        study.record_path(stage).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(study.record_path(stage),
                     json.dumps({"stage": stage, "fingerprint": study.fingerprint(stage),
                                 "commands": study.commands(stage), "seconds": round(seconds, 1),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
        if stage == "report":
            shutil.copyfile(study.path("report") / "report.html", study.folder / "report.html")
    return study.folder / "report.html"


def stage_times(study: Study) -> dict[str, float]:
    """Seconds each finished stage took."""
    times = {}
    for stage in STAGES:
        record = study.finished(stage)
        if record is not None:
            times[stage] = record["seconds"]
    return times


def run_metadata(study: Study) -> dict[str, Any]:
    """What a reader needs to reproduce the run: versions, seeds, hardware, time per stage."""
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
        "seeds": {"data": c.data.seed, "train": c.train.seed, "generate": c.generate.seed,
                  "quality": c.quality.seed, "fairness": c.fairness.seed},
        "hardware": {"platform": platform.platform(), "processor": platform.machine(),
                     "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"},
        "seconds_per_stage": stage_times(study),
        "config": c.to_dict(),
    }


def _write_metadata(study: Study) -> None:
    atomic_write(study.folder / "run.json", json.dumps(run_metadata(study), indent=2) + "\n")
