"""`cardiofair plan`: how many synthetic records each subgroup cell gets."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import PLAN


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, PLAN,
        help="decide how many synthetic records each subgroup cell gets",
        description="Count real records per subgroup cell (sensitive attributes x diagnosis) and plan synthetic "
        "records where the cohort is thin. equalize: every cell up to the largest cell of its diagnosis; prevalence: "
        "the positive diagnosis at --target-prevalence in every sensitive group (the paper trained at 25%% heart "
        "failure); target: counts or proportions per cell from --targets CSV.")
