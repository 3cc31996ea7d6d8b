"""The ``cardiofair`` command: one module per command, each a thin layer that parses its
options, calls its stage and prints what the stage made.

Options come from the stage's settings dataclass (:mod:`cardiofair.settings`), so a flag, its
study-file key and its default cannot disagree. A :class:`~cardiofair.errors.CardiofairError`
(the user can fix it) is printed in one line; any other exception is a bug in cardiofair and is
shown with its traceback and a request to report it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from cardiofair import __version__
from cardiofair.cli import (
    app,
    evaluate,
    fairness,
    generate,
    masks,
    merge,
    plan,
    prepare,
    quality,
    report,
    run,
    sample,
    split,
    summary,
    train,
)
from cardiofair.errors import CardiofairError, SubjectError

# In the order `cardiofair --help` lists them: the pipeline's.
COMMANDS = (prepare, summary, split, train, masks, sample, plan, generate, merge, quality, fairness, report, run, app,
            evaluate)
BUG_REPORT = ("cardiofair: this is a bug in cardiofair, not a problem with your input: please report it with the "
              "command you ran and the traceback above")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cardiofair`` command."""
    parser = argparse.ArgumentParser(
        prog="cardiofair",
        description="Fairness-aware data augmentation for cardiac MRI with text- and mask-conditioned diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"cardiofair {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the command; a user error is one line, anything else a bug shown
    with its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SubjectError as error:
        print(f"cardiofair: stopped (--strict) at {error}", file=sys.stderr)
        return 1
    except CardiofairError as error:
        print(f"cardiofair: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cardiofair: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output went away (`cardiofair ... | head`): nothing to report.
        return 1
    except Exception:
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return 1
