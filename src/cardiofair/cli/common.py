"""What every stage command shares: its flags from the stage's declaration, and running it."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiofair.options import add_options, from_args
from cardiofair.stages import Stage


def add_stage_command(subparsers: argparse._SubParsersAction, stage: Stage, help: str, description: str,
                      name: str | None = None) -> argparse.ArgumentParser:
    """A subcommand for ``stage``: its paths, its settings' flags and its run controls."""
    parser = subparsers.add_parser(name or stage.name, help=help, description=description)
    for path in stage.paths:
        if path.positional:
            parser.add_argument(path.name, type=Path, help=path.help)
        else:
            parser.add_argument(path.flag, type=Path, required=not path.optional, help=path.help)
    add_options(parser, stage.settings)
    if stage.resumes == "on request":
        parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output and start again")
    if stage.quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    parser.set_defaults(handler=lambda args: run_stage(stage, args))
    return parser


def run_stage(stage: Stage, args: argparse.Namespace) -> int:
    """Run ``stage`` with the settings and paths of a parsed command line; print its summary."""
    settings = from_args(stage.settings, args)
    paths = {p.name: getattr(args, p.name) for p in stage.paths}
    # Run again, generation continues where it stopped unless --overwrite asks to start again;
    # training continues only with --resume.
    resume = args.resume if stage.resumes == "on request" else not args.overwrite
    result = stage.run(settings, paths, resume=resume, overwrite=args.overwrite,
                       progress=not getattr(args, "quiet", False))
    print(stage.summary(result, paths))
    return 0
