"""`cardiofair train`: the generator trained on a prepared dataset's training split, in one
process or under accelerate's launcher with several."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cardiofair.diffusion import quiet_model_loading
from cardiofair.diffusion.checkpoint import CheckpointError, latest_checkpoint
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, describe_budget, train
from cardiofair.errors import CardiofairError
from cardiofair.results import TrainResult
from cardiofair.settings import TrainOptions
from cardiofair.stages import TRAIN

Result = TrainResult


def run(options: TrainOptions, *, dataset: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
        overwrite: bool = False, progress: bool = True) -> TrainResult:
    """`cardiofair train`: the preset with the run's options, trained on ``dataset`` into ``out``.

    ``resume`` continues the latest checkpoint; with ``overwrite`` as well, an unfinished run in
    ``out`` continues and anything else there is replaced (how a study restarts the stage).
    """
    if options.num_processes > 1:
        return _launch_processes(options, dataset, out, resume, overwrite, progress)
    quiet_model_loading()
    settings = TrainSettings.for_preset(get_preset(options.preset), **options.overrides())
    if progress:
        tqdm.write(f"training preset {options.preset}: {describe_budget(settings)}")
    if resume and overwrite:
        resume = continuable(out)
        overwrite = not resume
    return TrainResult.load(train(dataset, out, settings, resume=resume, overwrite=overwrite, progress_bar=progress))


def continuable(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a training run that checkpointed and did not finish: a checkpoints
    folder emptied by hand, or whose latest checkpoint is gone, is started again, not resumed."""
    try:
        latest_checkpoint(Path(out) / TrainResult.TRAINING / TrainResult.CHECKPOINTS)
    except CheckpointError:
        return False
    return not (Path(out) / TrainResult.FILE).is_file()


def _launch_processes(options: TrainOptions, dataset: str | os.PathLike, out: str | os.PathLike, resume: bool,
                      overwrite: bool, progress: bool) -> TrainResult:
    """The same training under ``accelerate launch`` with ``options.num_processes`` processes
    (CPU: gloo), each running the one-process command."""
    argv = TRAIN.command_line(replace(options, num_processes=1), {"dataset": dataset, "out": out})[1:]
    argv += ["--resume"] * resume + ["--overwrite"] * overwrite + ["--quiet"] * (not progress)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(options.num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():
        command.append("--cpu")
    code = subprocess.call(command + ["-m", "cardiofair", *argv])
    if code:
        raise CardiofairError(f"training with {options.num_processes} processes failed (exit {code}); its messages "
                              "are above")
    return TrainResult.load(out)


def summary(result: TrainResult, paths: Any) -> str:
    """Where the model and its validation grids are."""
    return f"model written to {result.folder} (validation grids in {result.folder / result.TRAINING / 'validation'})"

