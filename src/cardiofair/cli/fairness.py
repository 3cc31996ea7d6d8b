"""`cardiofair fairness` (also `cardiofair evaluate fairness`): does it make the classifier fairer?"""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import FAIRNESS

HELP = "does it make the classifier fairer? classifier arms x repeats with fairness metrics and intervals"
DESCRIPTION = ("Train a diagnosis classifier on the (ED, ES) pair in several arms (real, real+synthetic, synthetic, "
               "reweight, oversample, threshold, oracle; group-dro and synthetic-pretrain when named; real+synthetic, "
               "oversample and oracle also at each of --doses), all on the real dataset's split with the same "
               "seeds, and report "
               "per-group metrics (fairlearn MetricFrame), fairness gaps, intervals over repeats and over test "
               "subjects, and each arm's paired difference against real. Groupings the test set cannot measure (an "
               "attribute no test subject has) are left out with the reason. Writes fairness.json, per-group CSV "
               "tables and the predictions per test subject.")


def register(subparsers: argparse._SubParsersAction, name: str | None = None) -> None:
    add_stage_command(subparsers, FAIRNESS, help=HELP, description=DESCRIPTION, name=name)
