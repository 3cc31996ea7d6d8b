"""Throughput of `cardiofair generate` (plan -> synthetic dataset) at the default settings.

Prints images/s for the whole stage: mask sourcing, guided sampling, NIfTI and PNG writing.
A model is trained for one step unless --model is given (speed does not depend on the weights).

    python benchmarks/bench_generate.py [--model MODEL_DIR] [--n-real 300] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cardiofair.data.prepare import prepare_phantom
from cardiofair.data.records import read_manifest
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.sample import TrainedGenerator
from cardiofair.diffusion.train import TrainSettings, train
from cardiofair.generate import GenerateSettings, generate
from cardiofair.plan import PlanSettings, plan_synthesis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="trained model directory (default: cpu preset, one step)")
    parser.add_argument("--n-real", type=int, default=300, help="phantom subjects to plan from")
    parser.add_argument("--batch-size", type=int, default=GenerateSettings().batch_size)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_phantom(args.n_real, 0, tmp / "real", progress=False)
        model = args.model or train(tmp / "real", tmp / "model",
                                    TrainSettings.for_preset(get_preset("cpu"), max_steps=1, max_minutes=None),
                                    progress_bar=False)
        plan = plan_synthesis(read_manifest(tmp / "real"),
                              PlanSettings(strategy="prevalence", target_prevalence=0.25, attributes=("sex", "age")))
        n = int(plan["synthetic_count"].sum())
        sampler = TrainedGenerator.read_card(model)["sampling"]
        start = time.perf_counter()
        generate(model, tmp / "real", plan, tmp / "synthetic", GenerateSettings(batch_size=args.batch_size),
                 progress=False)
        seconds = time.perf_counter() - start
    print(f"machine: {os.cpu_count()} cores; model {model if args.model else 'cpu preset (1 step)'}; sampler {sampler}")
    print(f"generate: {n} synthetic pairs in {seconds:.1f} s = {n / seconds:.2f} pairs/s "
          f"(batch {args.batch_size}, including model loading, mask sourcing and file writing)")


if __name__ == "__main__":
    main()
