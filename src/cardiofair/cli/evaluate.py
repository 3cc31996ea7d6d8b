"""`cardiofair evaluate synthetic|fairness`: the earlier names of `cardiofair quality` and
`cardiofair fairness`, kept so existing scripts still run."""

from __future__ import annotations

import argparse

from cardiofair.cli import fairness, quality


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="the same as `quality` (synthetic) and `fairness` (fairness)",
                                   description="Earlier names: `evaluate synthetic` is `cardiofair quality`, "
                                   "`evaluate fairness` is `cardiofair fairness`.")
    kinds = parser.add_subparsers(dest="evaluation", required=True, metavar="WHAT")
    quality.register(kinds, name="synthetic")
    fairness.register(kinds, name="fairness")
