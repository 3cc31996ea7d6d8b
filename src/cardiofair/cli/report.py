"""`cardiofair report`: the study on one page, with the model card and the datasheet."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import REPORT


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, REPORT,
        help="the study on one HTML page, with the model card and the datasheet",
        description="Write OUT/report.html (one self-contained page: a plain verdict at the top, the cohort before "
        "and after augmentation, real and synthetic examples, one mask under different prompts, realism, fidelity "
        "and privacy beside their real references, the closest pairs, per-group fairness with intervals), "
        "OUT/figures/*.png, OUT/model_card.md and OUT/datasheet.md. Every input but --real may be left out; its "
        "sections then say so.")
