"""`cardiofair train`: the mask- and text-conditioned generator."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import TRAIN


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, TRAIN,
        help="train the mask- and text-conditioned generator on a prepared dataset",
        description="Train a UNet + text encoder + ControlNet generator. Writes OUT with the sampling pipeline "
        "(unet/, controlnet/, text_encoder/, tokenizer/, scheduler/), cardiofair.json, and training/ (checkpoints, "
        "loss curve, validation grids). Several processes: --num-processes N, or "
        "`accelerate launch -m cardiofair train ...`.")
