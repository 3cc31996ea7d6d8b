"""`cardiofair generate`: the synthetic records a plan asks for."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import GENERATE


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, GENERATE,
        help="make the synthetic records a plan asks for",
        description="Sample every synthetic record of a plan (from `cardiofair plan`) with a trained model, masks "
        "drawn from the dataset's real training records by the plan's mask policy. Resumable: run the same command "
        "again after a crash and it continues; the result equals an uninterrupted run.")
