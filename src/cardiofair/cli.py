"""The ``cardiofair`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from cardiofair import __version__

REAL_SOURCES = ("ukbb", "acdc", "mnms", "mnms2", "manifest")


class CommandError(Exception):
    """An error the user can fix; printed without a traceback."""


def _key_values(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def _names(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn a cohort (the built-in phantom or real data) into a prepared dataset",
        description="Pick the mid-ventricular ED/ES slice pair of every subject, crop a fixed field of "
        "view around the LV, resample, normalise, build the prompt and write a prepared dataset "
        "(manifest.csv, NIfTI pairs, PNG previews, excluded.csv, prepare.json).",
    )
    p.add_argument("--source", required=True, choices=("phantom",) + REAL_SOURCES, help="cohort type")
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument("--n", type=int, default=500, help="phantom: number of subjects (default 500)")
    p.add_argument("--seed", type=int, default=0, help="phantom: random seed (default 0)")
    p.add_argument("--phantom-config", type=Path, help="phantom: YAML file of PhantomConfig settings "
                   "(imbalance, prevalence odds, noise)")
    p.add_argument("--root", type=Path, help="real cohorts: dataset folder (for manifest: the cohort CSV)")
    p.add_argument("--metadata", type=Path, help="real cohorts: metadata CSV (UK Biobank, M&Ms)")
    p.add_argument("--columns", type=_key_values, help="UK Biobank: map metadata columns, e.g. "
                   "'subject_id=eid,sex=31-0.0,age_years=21003-2.0,bmi=21001-2.0,icd10=41270'")
    p.add_argument("--label-order", choices=("ukbb", "acdc"), help="manifest: the label order of the masks on disk")
    p.add_argument("--require", type=_names, help="metadata that must be present, comma-separated "
                   "(default: diagnosis); subjects missing one are excluded")
    p.add_argument("--size", type=int, default=64, help="output size in pixels (default 64)")
    p.add_argument("--fov-mm", type=float, default=150.0, help="field of view in mm, centred on the LV (default 150)")
    p.add_argument("--slices-per-subject", type=int, default=1,
                   help="mid-ventricular slice plus neighbours per subject (default 1)")
    p.add_argument("--align", choices=("none", "rv-left"), default="none",
                   help="rotate every slice so the RV lies left of the LV (default none)")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad subject with a non-zero exit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from cardiofair.data.phantom import PhantomConfig
    from cardiofair.data.prepare import PrepareSettings, prepare_phantom, prepare_sources
    from cardiofair.data.summary import summary_text

    settings = PrepareSettings(size=args.size, fov_mm=args.fov_mm, slices_per_subject=args.slices_per_subject,
                               align=args.align)
    run_options = {"overwrite": args.overwrite, "strict": args.strict, "workers": args.workers,
                   "progress": not args.quiet}
    if args.source == "phantom":
        if args.n < 1:
            raise CommandError("--n must be at least 1")
        loaded = yaml.safe_load(args.phantom_config.read_text()) if args.phantom_config else {}
        config = PhantomConfig.from_dict({**(loaded or {}), "size": args.size, "fov_mm": args.fov_mm})
        result = prepare_phantom(args.n, args.seed, args.out, config, settings, **run_options)
    else:
        from cardiofair.data.sources import discover

        if args.root is None:
            raise CommandError(f"--source {args.source} needs --root")
        options = {"metadata": args.metadata, "columns": args.columns, "label_order": args.label_order,
                   "required": args.require}
        options = {k: v for k, v in options.items() if v is not None}
        sources = discover(args.source, args.root, **options)
        source_settings = {"source": args.source, "root": str(args.root),
                           **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}}
        result = prepare_sources(sources, args.out, settings, source_settings, **run_options)
    print(f"wrote {result.n_records} records from {result.n_subjects} subjects to {result.out}; "
          f"{len(result.excluded)} excluded" + (f" (reasons in {result.out / 'excluded.csv'})" if result.excluded else ""))
    if not args.quiet:
        print()
        print(summary_text(result.out))
    return 0


def _add_summary(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summary", help="print the subgroup table of a prepared dataset",
                              description="Counts per subgroup cell (sex x age decade x BMI class x diagnosis) "
                              "and diagnosis prevalence per sensitive group.")
    p.add_argument("dataset", type=Path, help="prepared dataset directory")
    p.set_defaults(handler=_summary)


def _summary(args: argparse.Namespace) -> int:
    from cardiofair.data.summary import summary_text

    print(summary_text(args.dataset))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cardiofair`` command."""
    parser = argparse.ArgumentParser(
        prog="cardiofair",
        description="Fairness-aware data augmentation for cardiac MRI with text- and mask-conditioned diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"cardiofair {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(subparsers)
    _add_summary(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the subcommand, turn expected errors into one-line messages."""
    from cardiofair.data.records import OutputExistsError, SubjectError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SubjectError as error:
        print(f"cardiofair: stopped (--strict) at {error}", file=sys.stderr)
        return 1
    except (CommandError, OutputExistsError, FileNotFoundError, ValueError, yaml.YAMLError) as error:
        print(f"cardiofair: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cardiofair: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
