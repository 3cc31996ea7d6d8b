"""`cardiofair run [CONFIG]`: the whole study, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiofair.stages import STAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="the whole study: " + ", ".join(stage.name for stage in STAGES),
        description="Run a whole study from one YAML configuration (without one: the embedded default, "
        "configs/phantom.yaml: the phantom cohort with the CPU presets). Each stage writes runs/NAME/STAGE/ and is "
        "skipped when it already finished with the same settings, so running the same command again after a crash "
        "continues. The report is runs/NAME/report.html.")
    parser.add_argument("config", nargs="?", type=Path, help="study configuration (see configs/); default: built in")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.max_steps=200 (repeatable)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="redo this stage and every later one even if finished (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print each stage's command and whether it would run")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cardiofair.config import load_config
    from cardiofair.study import Study, run_study

    config, base = load_config(args.config, args.overrides)
    report = run_study(Study(config, base), force=args.force, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"study finished: open {report}")
    return 0
