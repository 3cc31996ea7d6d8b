"""`cardiofair sample MODEL --mask MASK --prompt TEXT`: a few pairs for one mask and prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiofair.options import add_options, from_args
from cardiofair.settings import SampleSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample", help="draw synthetic (ED, ES) pairs from a trained model, a mask and a prompt",
        description="Draw N images for one mask pair (a record's mask file from a prepared dataset) and one prompt; "
        "writes a prepared dataset of synthetic records (NIfTI marked SYNTHETIC, PNG previews).")
    parser.add_argument("model", type=Path, help="trained model directory")
    parser.add_argument("--mask", required=True, type=Path, help="mask NIfTI of a prepared record (masks/<id>.nii.gz)")
    parser.add_argument("--prompt", required=True, help='e.g. "Female, age in 60s, normal BMI, heart failure"')
    parser.add_argument("--out", required=True, type=Path, help="output dataset directory")
    add_options(parser, SampleSettings)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cardiofair.generate import sample

    out = sample(args.model, args.mask, args.prompt, args.out, from_args(SampleSettings, args), overwrite=args.overwrite)
    print(f"wrote {args.n} synthetic pairs to {out}")
    return 0
