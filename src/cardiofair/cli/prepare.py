"""`cardiofair prepare`: a cohort in, a prepared dataset out."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import PREPARE


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, PREPARE,
        help="turn a cohort (the built-in phantom or real data) into a prepared dataset",
        description="Pick the mid-ventricular ED/ES slice pair of every subject, crop a fixed field of view around "
        "the LV, resample, normalise, build the prompt and write a prepared dataset (manifest.csv, NIfTI pairs, PNG "
        "previews, excluded.csv, prepare.json).")
