"""What a training step's parts cost: one part of the batch (forward and backward of the `cpu`
generator's UNet, ControlNet and text encoder, on one thread) alone, and two such parts side by
side in two threads, as the training step runs them (`cardiofair.threads.batch_parts`).

    python benchmarks/bench_train_parts.py [--pairs 1,4,8] [--repeats 6]

A part of 8 pairs is what each core runs in a 16-pair step, 4 in the first steps' 8-pair one.
Side by side / alone near 1 means the two cores work apart; the time of a 1-pair part is mostly
each operation's dispatch, the step's fixed cost. Weights, images, masks and prompts are random;
speed does not depend on them. Nothing is asserted. Under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Callable

import torch
from diffusers import DDPMScheduler

from cardiofair.diffusion.conditioning import control_image
from cardiofair.diffusion.loss import image_losses, model_input
from cardiofair.diffusion.models import build_models
from cardiofair.diffusion.presets import get_preset
from cardiofair.threads import one_thread_each


def median_seconds(work: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``work`` over ``repeats`` calls after one warm-up."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="1,4,8", help="pairs per part, comma-separated")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    preset = get_preset("cpu")
    vocabulary, length = 64, 16
    models = build_models(preset, vocabulary, length, seed=0)
    scheduler = DDPMScheduler(**preset.noise_scheduler)
    parameters = [p for module in (models.unet, models.controlnet, models.text_encoder) for p in module.parameters()]
    generator = torch.Generator().manual_seed(0)

    def part(pairs: int) -> Callable[[], None]:
        images = model_input(torch.rand(pairs, preset.image_channels, preset.size, preset.size) * 2 - 1, preset,
                             None, generator)
        masks = torch.randint(0, 4, (pairs, 2, preset.size, preset.size), dtype=torch.uint8)
        condition = control_image(masks, preset.condition_mode, preset.condition_unshuffle)
        ids = torch.randint(0, vocabulary, (pairs, length))
        steps = torch.randint(100, 1000, (pairs,))

        def run() -> None:
            embeddings = models.text_encoder(ids).last_hidden_state
            loss = image_losses(models, scheduler, images, torch.randn_like(images), steps, embeddings, condition,
                                None, preset.mask_in_input).sum()
            torch.autograd.grad(loss, parameters, allow_unused=True)

        return run

    print(f"cpu preset, {torch.get_num_threads()} torch threads available; median of {args.repeats}")
    for pairs in (int(p) for p in args.pairs.split(",")):
        first, second = part(pairs), part(pairs)

        def both() -> None:
            threads = [threading.Thread(target=work) for work in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        with one_thread_each():
            alone = median_seconds(first, args.repeats)
            side_by_side = median_seconds(both, args.repeats)
        print(f"{pairs:>3} pairs a part: alone {alone:.3f} s, two side by side {side_by_side:.3f} s "
              f"({side_by_side / alone:.2f}x)")


if __name__ == "__main__":
    main()
