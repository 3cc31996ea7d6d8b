"""The paper's path on a GPU: peak memory and it/s of ControlNet training on Stable Diffusion at
512 px for each memory setting, and sampling speed (DDIM 20 steps, guidance 4).

Real Stable Diffusion weights cannot be shipped, so by default the script writes random weights
with SD 2.1-base's exact architecture (memory and speed do not depend on the values); pass
--weights to use a real local copy. Each setting runs in a fresh process (Accelerate's mixed
precision is process-wide), and prints one JSON line; the parent prints the table.

    python benchmarks/bench_sd_gpu.py --work /tmp/sdbench [--steps 10] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "fp32": dict(mixed_precision="no", gradient_checkpointing=False),
    "fp16": dict(mixed_precision="fp16", gradient_checkpointing=False),
    "fp16+checkpointing": dict(mixed_precision="fp16", gradient_checkpointing=True),
    "bf16+checkpointing": dict(mixed_precision="bf16", gradient_checkpointing=True),
    "fp16+checkpointing+8bit-adam": dict(mixed_precision="fp16", gradient_checkpointing=True, use_8bit_adam=True),
    "decoder-stage+fp16+checkpointing": dict(mixed_precision="fp16", gradient_checkpointing=True,
                                              stages=(("decoder", 1.0),)),
}


def measure_training(args: argparse.Namespace, name: str) -> dict:
    """Train ``args.steps`` timed steps with one setting; peak memory and it/s."""
    import torch
    from accelerate import Accelerator

    from cardiofair.diffusion.models import starting_point
    from cardiofair.diffusion.presets import get_preset
    from cardiofair.diffusion.train import (
        BatchSource,
        TrainingData,
        TrainSettings,
        place_models,
        start_stage,
        training_step,
    )

    preset = get_preset(args.preset)
    settings = TrainSettings.for_preset(preset, weights=str(args.weights), batch_size=args.batch_size,
                                        max_steps=args.steps + args.warmup, **SETTINGS[name])
    accelerator = Accelerator(mixed_precision=settings.mixed_precision)
    data = TrainingData.from_dataset(args.work / "data", preset)
    models, tokenizer, noise_scheduler = starting_point(preset, data.prompts, None, settings.seed, settings.weights,
                                                        settings.sd_config)
    place_models(models, settings, accelerator)
    batches = BatchSource(data, tokenizer, preset, settings)
    run = start_stage(accelerator, models, settings.stages[0][0], settings, settings.max_steps)
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup):
        training_step(accelerator, run, batches, noise_scheduler, settings, step)
    torch.cuda.synchronize()
    start = time.perf_counter()
    losses = [training_step(accelerator, run, batches, noise_scheduler, settings, args.warmup + step)
              for step in range(args.steps)]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for params in run.groups.values() for p in params)
    return {"setting": name, "it_per_s": args.steps / seconds, "images_per_s": args.steps * args.batch_size / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "trainable_params_m": trainable / 1e6,
            "final_loss": losses[-1], "optimizer": type(run.optimiser.optimizer).__name__}


def measure_sampling(args: argparse.Namespace) -> dict:
    """Sampling speed of the SD ControlNet pipeline in fp16: DDIM 20 steps, guidance 4."""
    import torch

    from cardiofair.diffusion.models import starting_point
    from cardiofair.diffusion.pipeline import assemble_pipeline, draw, make_sampler
    from cardiofair.diffusion.presets import get_preset
    from cardiofair.diffusion.train import TrainingData, TrainSettings

    preset = get_preset(args.preset)
    settings = TrainSettings.for_preset(preset, weights=str(args.weights))
    models, tokenizer, scheduler = starting_point(preset, [], None, settings.seed, settings.weights, settings.sd_config)
    pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, tokenizer,
                                 make_sampler(preset.sampling.sampler, scheduler), models.vae).to("cuda", torch.float16)
    pipeline.set_progress_bar_config(disable=True)
    data = TrainingData.from_dataset(args.work / "data", preset)
    masks, prompts = data.masks[: args.batch_size], data.prompts[: args.batch_size]
    generators = [torch.Generator("cuda").manual_seed(i) for i in range(args.batch_size)]
    draw(pipeline, masks, prompts, generators, preset.sampling, preset.condition_mode)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        images = draw(pipeline, masks, prompts, generators, preset.sampling, preset.condition_mode)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"setting": f"sampling fp16, {preset.sampling.sampler} {preset.sampling.steps} steps, guidance "
                       f"{preset.sampling.guidance_scale}, batch {args.batch_size}",
            "images_per_s": rounds * args.batch_size / seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "shape": list(images.shape)}


def prepare(args: argparse.Namespace) -> None:
    from cardiofair.data.prepare import PrepareSettings, prepare_phantom
    from cardiofair.diffusion.stable_diffusion import write_random_stable_diffusion

    if not (args.work / "data").exists():
        prepare_phantom(32, 0, args.work / "data", settings=PrepareSettings(size=512), progress=False)
    if args.weights is None:
        args.weights = args.work / f"random-{args.preset}"
        if not (args.weights / "unet").exists():
            write_random_stable_diffusion(args.weights, args.preset, device="cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data, random weights)")
    parser.add_argument("--weights", type=Path, help="real local Stable Diffusion weights (default: random)")
    parser.add_argument("--preset", default="sd21", choices=("sd21", "sd15"))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of the settings")
    args = parser.parse_args()
    if args.only:
        result = measure_sampling(args) if args.only == "sampling" else measure_training(args, args.only)
        print("RESULT " + json.dumps(result), flush=True)
        return

    import torch

    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}; preset {args.preset} at 512 px, "
          f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepare(args)
    print(f"data and weights ready in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for name in args.settings.split(",") + ["sampling"]:
        command = [sys.executable, __file__, "--work", str(args.work), "--weights", str(args.weights), "--preset",
                   args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size",
                   str(args.batch_size), "--only", name]
        done = subprocess.run(command, capture_output=True, text=True)
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not found:
            error = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"setting": name, "error": error})
        else:
            rows.append(json.loads(found[0][len("RESULT "):]))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'setting':44s} {'it/s':>7s} {'img/s':>7s} {'peak GiB':>9s}  notes")
    for row in rows:
        if "error" in row:
            print(f"{row['setting']:44s} failed: {row['error'][:120]}")
            continue
        notes = row.get("optimizer", "") + (f", {row['trainable_params_m']:.0f}M trained" if "trainable_params_m" in row else "")
        it = f"{row['it_per_s']:7.2f}" if "it_per_s" in row else " " * 7
        print(f"{row['setting']:44s} {it} {row['images_per_s']:7.2f} {row['peak_gib']:9.2f}  {notes}")


if __name__ == "__main__":
    main()
