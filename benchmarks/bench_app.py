"""How interactive `cardiofair app` is on this machine: start-up (model and dataset loaded) and
seconds per drawn (ED, ES) pair at the model's own sampler settings, one pair per request as
the Draw button asks. A `cpu` model is trained for one step unless --model is given (speed does
not depend on the weights); the dataset lends the masks.

    OMP_NUM_THREADS=1 python benchmarks/bench_app.py [--model MODEL_DIR --dataset PREPARED_DIR] [--pairs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cardiofair.app.explorer import Explorer
from cardiofair.data.prepare import prepare_phantom
from cardiofair.diffusion.presets import get_preset
from cardiofair.diffusion.train import TrainSettings, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="trained model directory (default: cpu preset, one step)")
    parser.add_argument("--dataset", type=Path, help="prepared dataset at the model's size (default: 40 phantom "
                        "subjects)")
    parser.add_argument("--pairs", type=int, default=10, help="pairs to draw, one request each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = args.dataset or tmp / "real"
        if not args.dataset:
            prepare_phantom(40, 0, dataset, progress=False, workers=1)
        model = args.model or train(dataset, tmp / "model",
                                    TrainSettings.for_preset(get_preset("cpu"), max_steps=1, max_minutes=None),
                                    progress_bar=False)
        start = time.perf_counter()
        explorer = Explorer(model, dataset, workdir=tmp / "drawn")
        started = time.perf_counter() - start
        records = explorer.records_in(explorer.cells()[0])
        mask, spacing, values = explorer.record_mask(records[0])
        sampler = explorer.sampler()
        explorer.draw(mask, values, 0, sampler, spacing)  # the first call pays for one-off set-up
        seconds = [explorer.draw(mask, values, seed, sampler, spacing).seconds for seed in range(1, args.pairs + 1)]
    print(f"cores {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"model {explorer.generator.info.get('preset')} at {explorer.size} px, {sampler.describe()}")
    print(f"start-up (model and dataset loaded): {started:.2f} s")
    print(f"one pair: median {statistics.median(seconds):.3f} s, slowest {max(seconds):.3f} s over {args.pairs} "
          "requests")


if __name__ == "__main__":
    main()
