"""`cardiofair summary DATASET`: the subgroup table of a prepared dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("summary", help="print the subgroup table of a prepared dataset",
                                   description="Counts per subgroup cell (sex x age decade x BMI class x diagnosis) "
                                   "and diagnosis prevalence per sensitive group.")
    parser.add_argument("dataset", type=Path, help="prepared dataset directory")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cardiofair.data.summary import summary_text

    print(summary_text(args.dataset))
    return 0
