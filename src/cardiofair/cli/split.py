"""`cardiofair split`: train, validation and test subjects."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import SPLIT


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, SPLIT,
        help="assign subjects to train / val / test (a split column in the manifest)",
        description="Subject-level split, stratified by subgroup cell, deterministic by seed. Later stages train and "
        "take masks from the train split only; test subjects never reach training.")
