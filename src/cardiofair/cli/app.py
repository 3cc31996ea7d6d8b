"""`cardiofair app --model MODEL_DIR`: explore a generator and a synthetic dataset in the browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiofair.errors import CardiofairError
from cardiofair.options import add_options, from_args
from cardiofair.settings import AppSettings

INSTALL_HINT = "pip install 'cardiofair[app]'"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="explore a generator and a synthetic dataset in the browser",
        description="A local web page (gradio) to draw (ED, ES) pairs from a mask and prompt controls, sweep one "
        "attribute over its values with the judges' read-out under each image, and browse a synthetic dataset "
        f"beside each record's mask source and nearest training image. Needs the app extra: {INSTALL_HINT}.")
    parser.add_argument("--model", required=True, type=Path, help="trained model directory")
    parser.add_argument("--dataset", type=Path, help="the prepared real dataset: its training records lend masks")
    parser.add_argument("--masks", type=Path, help="a mask generator from `cardiofair masks`: draw new hearts for the "
                        "prompt")
    parser.add_argument("--synthetic", type=Path, help="a synthetic dataset from `cardiofair generate` to browse")
    parser.add_argument("--quality", type=Path, help="its `cardiofair quality` results: the judges and per-image "
                        "figures")
    add_options(parser, AppSettings)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = from_args(AppSettings, args)
    try:
        from cardiofair.app.ui import serve
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in ("gradio", "gradio_client"):
            raise
        raise CardiofairError(f"`cardiofair app` needs gradio, which is not installed: {INSTALL_HINT}") from None
    serve(args.model, args.dataset, args.synthetic, args.quality, args.masks, settings)
    return 0
