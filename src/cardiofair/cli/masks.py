"""`cardiofair masks`: the mask generator."""

from __future__ import annotations

import argparse

from cardiofair.cli.common import add_stage_command
from cardiofair.stages import MASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    add_stage_command(
        subparsers, MASKS,
        help="train the mask generator (new ED/ES label maps per subgroup cell) on a prepared dataset",
        description="Fit a conditional statistical shape model to the training split's mask pairs: signed-distance "
        "maps of the LV cavity, epicardium and heart at ED and ES, principal shape modes, a latent mean with additive "
        "effects of sex, age decade, BMI class and diagnosis, and a residual covariance per sex and diagnosis. "
        "Writes OUT with shape_model.safetensors and cardiofair.json. `cardiofair generate --masks OUT` draws from "
        "it for cells whose mask policy is synthesized.")
