"""`cardiofair merge`: real training records and synthetic records in one dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="real training records + synthetic records in one dataset",
                                   description="The augmented training set: the real dataset's training records "
                                   "(never its test split) and a synthetic dataset's records, files copied.")
    parser.add_argument("real", type=Path, help="prepared real dataset")
    parser.add_argument("synthetic", type=Path, help="synthetic dataset from `cardiofair generate`")
    parser.add_argument("--out", required=True, type=Path, help="merged dataset directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cardiofair.data.summary import summary_text
    from cardiofair.generate import merge_datasets

    print(summary_text(merge_datasets(args.real, args.synthetic, args.out, overwrite=args.overwrite)))
    return 0
