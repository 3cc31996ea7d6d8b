"""`cardiofair quality` (also `cardiofair evaluate synthetic`): is the synthetic data any good?"""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import QUALITY

HELP = "realism, mask fidelity, prompt fidelity and privacy of a synthetic dataset"
DESCRIPTION = ("Train (or load cached) evaluators on the real training split, then judge the synthetic records "
               "beside real-vs-real references: FD/KD-cardiofair realism and MS-SSIM diversity, mask fidelity (Dice), "
               "prompt fidelity (balanced accuracy) and privacy (nearest-neighbour copy rate). Writes "
               "synthetic_quality.json, per-cell CSV tables and figures.")


def register(subparsers: argparse._SubParsersAction, name: str | None = None) -> None:
    add_stage_command(subparsers, QUALITY, help=HELP, description=DESCRIPTION, name=name)
