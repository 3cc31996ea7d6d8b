"""Throughput of the generator on this CPU: the preset's defaults against a naive configuration
and against the preset as it was before the mask joined the UNet's input.

Prints training steps/s, samples/s (guided (ED, ES) slice pairs per second) and peak memory for
a preset at its default settings (``cpu`` unless ``--preset``), the same figures for a naive
configuration (diffusers' defaults: attention at every resolution with ``attention_head_dim=8``,
DDIM 50 steps), the ratios between the two, and the FLOPs per image against a 2048x2048 fp32
matmul measured in the same process, so that the distance to the hardware ceiling is a number.
A last table puts the preset beside its earlier design (the highest-resolution blocks half as
wide), before and after, measured in the same run.
Weights are random: speed does not depend on them. It is not a test.

Each measurement runs in a fresh subprocess (the script calls itself with ``--only``), so that
the peak RSS it reports belongs to that measurement alone.

Run: python benchmarks/bench_generator.py [--quick] [--json figures.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from cardiofair.diffusion.conditioning import control_image, join_mask
from cardiofair.diffusion.loss import diffusion_loss, model_input
from cardiofair.diffusion.models import Models, build_models
from cardiofair.diffusion.pipeline import assemble_pipeline, make_sampler
from cardiofair.diffusion.presets import PRESETS, Preset, build_noise_scheduler, get_preset
from cardiofair.diffusion.tokenizer import build_prompt_tokenizer, tokenize
from cardiofair.diffusion.train import BatchSource, TrainingData, TrainSettings, start_stage, training_step
from cardiofair.prompts import BMI_CLASSES, SEXES, build_prompt

PARTS = ("default-train", "default-sample", "before-train", "before-sample", "naive-train", "naive-sample")
TARGET_PAIRS_PER_S = 2.0
# The naive reference: diffusers' defaults (UNet2DConditionModel's attention_head_dim, which sets
# the number of heads, and the pipelines' 50 DDIM steps) with attention at every resolution.
NAIVE_HEAD_DIM = 8
MATMUL_SIZE = 2048
ATTENTION_OPS = (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many steps each measurement warms up and times."""

    train_warmup: int
    train_steps: int
    naive_train_warmup: int
    naive_train_steps: int
    naive_sample_steps: int  # of the naive sampler's steps: the rest is extrapolated
    sample_batch: int


FULL = Plan(train_warmup=2, train_steps=5, naive_train_warmup=1, naive_train_steps=2, naive_sample_steps=3,
            sample_batch=32)
QUICK = Plan(train_warmup=1, train_steps=2, naive_train_warmup=1, naive_train_steps=1, naive_sample_steps=1,
             sample_batch=8)


# --- FLOP counting ---------------------------------------------------------------------------------


def register_cpu_attention_flops() -> None:
    """Count CPU flash attention as torch counts the GPU kernels: FlopCounterMode has no formula
    for the CPU ops and would count the attention as 0 FLOPs."""
    forward, backward = ATTENTION_OPS
    if forward not in flop_registry:
        register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))
    if backward not in flop_registry:
        register_flop_formula(backward)(
            lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad_out, q, k, v))


def check_attention_flops() -> None:
    """One small cross-attention, counted against a hand count (fails loudly if the registered
    formulas are not the ones used, e.g. because torch dispatched another kernel)."""
    b, h, s_q, s_k, d = 2, 3, 16, 5, 8
    q = torch.randn(b, h, s_q, d, requires_grad=True)
    k, v = torch.randn(b, h, s_k, d), torch.randn(b, h, s_k, d)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    scores = 2 * b * h * s_q * s_k * d  # one (s_q x d) @ (d x s_k) product per head
    # forward: scores and weights @ v; backward: recomputed scores, grad of weights, of v, of q, of k
    expected = {ATTENTION_OPS[0]: 2 * scores, ATTENTION_OPS[1]: 5 * scores}
    got = {op: counts.get(op, 0) for op in ATTENTION_OPS}
    if got != expected:
        raise AssertionError(f"attention FLOP formulas disagree with the hand count: {got} != {expected}")


def count_flops(fn: Callable[[], Any]) -> tuple[int, int]:
    """(all counted FLOPs, of which attention) of one call."""
    with FlopCounterMode(display=False) as counter:
        fn()
    counts = counter.get_flop_counts()["Global"]
    return sum(counts.values()), sum(counts.get(op, 0) for op in ATTENTION_OPS)


def matmul_gflops(seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of a square torch.mm, averaged over about ``seconds`` (the ceiling figure)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    for _ in range(2):
        torch.mm(a, b)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        repeats += 1
    return 2 * MATMUL_SIZE**3 * repeats / (time.perf_counter() - start) / 1e9


# --- configurations and synthetic inputs -------------------------------------------------------------


def naive_preset(preset: Preset) -> Preset:
    """The preset as diffusers' defaults would build it: plain pixel space (no unshuffling, so
    the UNet runs at full resolution), a cross-attention block at every resolution and
    diffusers' head setting, sampled with DDIM 50 steps, guided at every step."""
    unet = dict(preset.unet)
    levels = len(unet["block_out_channels"])
    unet.update(down_block_types=("CrossAttnDownBlock2D",) * levels, up_block_types=("CrossAttnUpBlock2D",) * levels,
                attention_head_dim=NAIVE_HEAD_DIM)
    sampling = dataclasses.replace(preset.sampling, sampler="ddim", steps=50, guidance_start=0.0, autoguidance=1.0)
    return dataclasses.replace(preset, name=f"{preset.name}-naive", unet=unet, sampling=sampling,
                               pixel_unshuffle=1, condition_unshuffle=1, controlnet_embedding=(16,))


def before_preset(preset: Preset) -> Preset:
    """The preset as it was before its first (highest-resolution) blocks were widened to the
    others' width: half as wide (64 channels for ``cpu``)."""
    widths = tuple(preset.unet["block_out_channels"])
    return dataclasses.replace(preset, name=f"{preset.name}-before",
                               unet={**preset.unet, "block_out_channels": (widths[0] // 2, *widths[1:])})


def grammar_prompts() -> list[str]:
    """Every prompt of the default grammar over adult cohorts, healthy or in heart failure."""
    bmi_examples = dict(zip(BMI_CLASSES, (17.0, 22.0, 27.0, 33.0)))
    return [build_prompt({"sex": sex, "age_years": age, "bmi": bmi_examples[bmi], "diagnosis": diagnosis})
            for sex in SEXES for age in range(20, 90, 10) for bmi in BMI_CLASSES
            for diagnosis in ("healthy", "heart failure")]


@dataclasses.dataclass
class Setup:
    """Models, tokenizer and a synthetic batch: random masks (labels 0-3) and grammar prompts."""

    preset: Preset
    models: Models
    tokenizer: Any
    masks: torch.Tensor
    prompts: list[str]

    @classmethod
    def build(cls, preset: Preset, batch: int, seed: int = 0) -> "Setup":
        all_prompts = grammar_prompts()
        tokenizer = build_prompt_tokenizer(all_prompts)
        models = build_models(preset, len(tokenizer.get_vocab()), tokenizer.model_max_length, seed)
        generator = torch.Generator().manual_seed(seed)
        masks = torch.randint(0, 4, (batch, 2, preset.size, preset.size), generator=generator, dtype=torch.uint8)
        prompts = random.Random(seed).choices(all_prompts, k=batch)
        return cls(preset=preset, models=models, tokenizer=tokenizer, masks=masks, prompts=prompts)

    def parameters_m(self) -> dict[str, float]:
        return {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3) for name, m in self.models.named().items()}


def max_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# --- measurements (each in its own process) -----------------------------------------------------------


def measure_train(preset: Preset, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Steps/s of the joint stage exactly as train() runs it (``training_step``: balanced batch,
    prompt dropout, text encoder, loss, backward, clipping, AdamW, EMA of every model)."""
    setup = Setup.build(preset, batch)
    # Every timed step draws ``batch`` pairs, the smaller early batch of the preset's first steps included.
    settings = TrainSettings.for_preset(preset, batch_size=batch, early_batch_size=None, stages=(("joint", 1.0),))
    accelerator = Accelerator(cpu=True)
    images = torch.rand(batch, 2, preset.size, preset.size) * 2.0 - 1.0
    data = TrainingData(images=images, masks=setup.masks, prompts=setup.prompts, manifest=None)
    batches = BatchSource(data, setup.tokenizer, preset, settings)
    run = start_stage(accelerator, setup.models, "joint", settings, warmup + steps)
    scheduler = build_noise_scheduler(preset)

    rss_setup = max_rss_mb()
    ceiling = matmul_gflops()
    for step in range(warmup):
        training_step(accelerator, run, batches, scheduler, settings, step)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        training_step(accelerator, run, batches, scheduler, settings, step)
    seconds = (time.perf_counter() - start) / steps
    peak = max_rss_mb()

    def one_image() -> None:
        # Every counted op is linear in the batch: one image's forward + backward (AdamW and
        # EMA are elementwise, which FlopCounterMode does not count).
        generator = torch.Generator().manual_seed(0)
        target = model_input(images[:1], preset, None, generator)
        condition = control_image(setup.masks[:1], preset.condition_mode, preset.condition_unshuffle)
        embeddings = setup.models.text_encoder(tokenize(setup.tokenizer, setup.prompts[:1])).last_hidden_state
        diffusion_loss(setup.models, scheduler, target, embeddings, condition, generator,
                       settings.min_snr_gamma, preset.mask_in_input).backward()

    flops, attention = count_flops(one_image)
    return {"batch": batch, "warmup_steps": warmup, "timed_steps": steps, "seconds_per_step": seconds,
            "steps_per_s": 1.0 / seconds, "samples_per_s": batch / seconds,
            "gflop_per_sample": flops / 1e9, "attention_gflop_per_sample": attention / 1e9,
            "achieved_gflops": flops * batch / seconds / 1e9, "matmul_gflops": ceiling,
            "rss_setup_mb": rss_setup, "peak_rss_mb": peak, "parameters_m": setup.parameters_m()}


def measure_sample(preset: Preset, batch: int, timed_steps: int) -> dict[str, Any]:
    """Guided samples/s through the pipeline at the preset's sampler settings. With fewer
    ``timed_steps`` than the sampler's steps the time is extrapolated: every step costs the same."""
    settings = preset.sampling
    setup = Setup.build(preset, batch)
    models = setup.models
    for model in models.named().values():
        model.eval()
    # The guide has the model's architecture, so its pass costs what the model's does: the
    # untrained models stand in for it.
    guide = {"unet": models.unet, "controlnet": models.controlnet, "text_encoder": models.text_encoder}
    pipeline = assemble_pipeline(preset.family, models.unet, models.controlnet, models.text_encoder, setup.tokenizer,
                                 make_sampler(settings.sampler, build_noise_scheduler(preset)),
                                 pixel_unshuffle=preset.pixel_unshuffle,
                                 condition_unshuffle=preset.condition_unshuffle, mask_in_input=preset.mask_in_input,
                                 guide=guide if settings.autoguidance > 1.0 else None)

    def draw(steps: int) -> None:
        pipeline(setup.masks, setup.prompts, [torch.Generator().manual_seed(i) for i in range(batch)],
                 settings.override(steps=steps), preset.condition_mode)

    rss_setup = max_rss_mb()
    ceiling = matmul_gflops()
    draw(1)  # warm-up
    start = time.perf_counter()
    draw(timed_steps)
    seconds = (time.perf_counter() - start) / timed_steps * settings.steps
    peak = max_rss_mb()

    # One guided denoising step of one image: cond + uncond in one batch of 2, as the pipeline runs it.
    guided = settings.guidance_scale > 1.0
    with torch.no_grad():
        embeddings = pipeline.encode_prompts(setup.prompts[:1] + ([""] if guided else []))
        pair = 2 if guided else 1
        sample = torch.randn(pair, *pipeline.latent_shape(preset.size, preset.size))
        condition = control_image(setup.masks[:1], preset.condition_mode,
                                  preset.condition_unshuffle).repeat(pair, 1, 1, 1)
        if preset.mask_in_input:
            sample = join_mask(sample, condition)
        t = torch.tensor(500)
        residuals: dict[str, Any] = {}

        def controlnet() -> None:
            residuals["down"], residuals["mid"] = models.controlnet(
                sample, t, encoder_hidden_states=embeddings, controlnet_cond=condition,
                conditioning_scale=settings.controlnet_scale, return_dict=False)

        def unet() -> None:
            models.unet(sample, t, encoder_hidden_states=embeddings, down_block_additional_residuals=residuals["down"],
                        mid_block_additional_residual=residuals["mid"])

        controlnet_flops, controlnet_attention = count_flops(controlnet)
        unet_flops, unet_attention = count_flops(unet)
    step_flops = controlnet_flops + unet_flops
    image_flops = step_flops / pair * settings.passes
    return {"sampler": settings.sampler, "steps": settings.steps, "guidance_scale": settings.guidance_scale,
            "guidance_start": settings.guidance_start, "autoguidance": settings.autoguidance,
            "batch": batch, "timed_steps": timed_steps, "extrapolated": timed_steps < settings.steps,
            "seconds_per_batch": seconds, "images_per_s": batch / seconds,
            "gflop_per_step": {"unet": unet_flops / 1e9, "controlnet": controlnet_flops / 1e9,
                               "attention": (unet_attention + controlnet_attention) / 1e9, "total": step_flops / 1e9},
            "gflop_per_image": image_flops / 1e9,
            "achieved_gflops": image_flops * batch / seconds / 1e9, "matmul_gflops": ceiling,
            "rss_setup_mb": rss_setup, "peak_rss_mb": peak, "parameters_m": setup.parameters_m()}


def run_part(part: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement, in this process."""
    plan = QUICK if args.quick else FULL
    preset = get_preset(args.preset)
    naive = naive_preset(preset)
    if part == "default-train":
        return measure_train(preset, preset.training.batch_size, plan.train_warmup, plan.train_steps)
    if part == "before-train":
        return measure_train(before_preset(preset), preset.training.batch_size, plan.train_warmup, plan.train_steps)
    if part == "before-sample":
        return measure_sample(before_preset(preset), args.sample_batch or plan.sample_batch, preset.sampling.steps)
    if part == "naive-train":
        return measure_train(naive, args.naive_batch or preset.training.batch_size, plan.naive_train_warmup,
                             plan.naive_train_steps)
    if part == "default-sample":
        return measure_sample(preset, args.sample_batch or plan.sample_batch, preset.sampling.steps)
    return measure_sample(naive, args.naive_batch or args.sample_batch or plan.sample_batch, plan.naive_sample_steps)


def spawn(part: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and read back its JSON line."""
    command = [sys.executable, os.path.abspath(__file__), "--only", part, "--preset", args.preset,
               "--threads", str(args.threads), "--naive-batch", str(args.naive_batch)]
    if args.sample_batch:
        command += ["--sample-batch", str(args.sample_batch)]
    if args.quick:
        command.append("--quick")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{part} failed (exit {done.returncode})")
    print(f"  [{part}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# --- report ----------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def report(figures: dict[str, Any], preset: Preset) -> list[str]:
    """The table, the ratios and the target verdict."""
    d_train, d_sample = figures["default"]["train"], figures["default"]["sample"]
    n_train, n_sample = figures["naive"]["train"], figures["naive"]["sample"]
    preset_batch = preset.training.batch_size
    # gain: the default's speed-up, or its FLOP reduction, over the naive configuration.
    # A naive figure measured at another batch or over fewer steps than it stands for is marked '~'.
    n_train_mark = "~" if n_train["batch"] != preset_batch else ""
    n_sample_mark = "~" if n_sample["extrapolated"] else ""

    def row(label: str, default: str, naive: str, ratio: str = "") -> str:
        return f"{label:<44}{default:>22}{naive:>22}{ratio:>14}"

    def ratio(a: float, b: float) -> str:
        return f"x{a / b:.1f}" if b else "-"

    def sampler(s: dict[str, Any]) -> str:
        # Autoguidance after the guidance scale, the share of steps left unguided after a slash,
        # within the 22-character column: "dpm++ 8 g2.5a1.5/.25".
        auto = f"a{s['autoguidance']:g}" if s.get("autoguidance", 1.0) > 1.0 else ""
        start = f"/{s['guidance_start']:g}".replace("/0.", "/.") if s.get("guidance_start") else ""
        return f"{s['sampler']} {s['steps']} g{s['guidance_scale']:g}{auto}{start}"

    lines = [row("", "default", "naive", "gain"),
             row("UNet + ControlNet parameters [M]",
                 *(f"{t['parameters_m']['unet'] + t['parameters_m']['controlnet']:.2f}" for t in (d_train, n_train))),
             "training (joint stage)",
             row("  batch measured", str(d_train["batch"]), str(n_train["batch"])),
             row("  seconds per step (measured batch)", f"{d_train['seconds_per_step']:.2f}",
                 f"{n_train['seconds_per_step']:.2f}"),
             row(f"  steps/s at batch {preset_batch}", f"{d_train['samples_per_s'] / preset_batch:.4f}",
                 f"{n_train_mark}{n_train['samples_per_s'] / preset_batch:.4f}",
                 ratio(d_train["samples_per_s"], n_train["samples_per_s"])),
             row("  samples/s", f"{d_train['samples_per_s']:.2f}", f"{n_train['samples_per_s']:.3f}",
                 ratio(d_train["samples_per_s"], n_train["samples_per_s"])),
             row("  GFLOP per sample (fwd + bwd)", f"{d_train['gflop_per_sample']:.2f}",
                 f"{n_train['gflop_per_sample']:.2f}", ratio(n_train["gflop_per_sample"], d_train["gflop_per_sample"])
                ),
             row("  achieved GFLOP/s", f"{d_train['achieved_gflops']:.1f}", f"{n_train['achieved_gflops']:.1f}"),
             row("  peak RSS [MB] (measured batch)", f"{d_train['peak_rss_mb']:.0f}", f"{n_train['peak_rss_mb']:.0f}"),
             "sampling (guided: cond + uncond in one batch; gGaA/S: guidance G, autoguidance A, the first share S of the steps "
             "unguided)",
             row("  sampler", sampler(d_sample), sampler(n_sample)),
             row("  batch measured", str(d_sample["batch"]), str(n_sample["batch"])),
             row("  steps timed", str(d_sample["timed_steps"]), str(n_sample["timed_steps"])),
             row("  slice pairs/s", f"{d_sample['images_per_s']:.3f}", f"{n_sample_mark}{n_sample['images_per_s']:.5f}",
                 ratio(d_sample["images_per_s"], n_sample["images_per_s"])),
             row("  seconds per pair", f"{1 / d_sample['images_per_s']:.2f}",
                 f"{n_sample_mark}{1 / n_sample['images_per_s']:.1f}"),
             row("  GFLOP per denoising step per pair", f"{d_sample['gflop_per_step']['total']:.2f}",
                 f"{n_sample['gflop_per_step']['total']:.2f}"),
             row("    UNet / ControlNet",
                 *(f"{s['gflop_per_step']['unet']:.2f} / {s['gflop_per_step']['controlnet']:.2f}"
                   for s in (d_sample, n_sample))),
             row("    of which attention", *(f"{s['gflop_per_step']['attention']:.2f}" for s in (d_sample, n_sample))),
             row("  GFLOP per pair (x steps)", f"{d_sample['gflop_per_image']:.1f}",
                 f"{n_sample['gflop_per_image']:.1f}",
                 ratio(n_sample["gflop_per_image"], d_sample["gflop_per_image"])),
             row("  achieved GFLOP/s", f"{d_sample['achieved_gflops']:.1f}", f"{n_sample['achieved_gflops']:.1f}"),
             row(f"  fp32 matmul {MATMUL_SIZE}^2 GFLOP/s (same process)", f"{d_sample['matmul_gflops']:.1f}",
                 f"{n_sample['matmul_gflops']:.1f}"),
             row("  achieved / matmul", f"{d_sample['achieved_gflops'] / d_sample['matmul_gflops']:.0%}",
                 f"{n_sample['achieved_gflops'] / n_sample['matmul_gflops']:.0%}"),
             row("  peak RSS [MB] (measured batch)", f"{d_sample['peak_rss_mb']:.0f}",
                 f"{n_sample['peak_rss_mb']:.0f}")]
    if n_train_mark or n_sample_mark:
        lines.append(f"~ naive: measured at batch {n_train['batch']} (training) and over {n_sample['timed_steps']} of "
                     f"{n_sample['steps']} steps (sampling), scaled linearly: its full runs take hours here.")
    floor = d_sample["gflop_per_image"]
    budget = d_sample["achieved_gflops"] / TARGET_PAIRS_PER_S
    lines += ["",
              f"FLOP floor per pair (default, {sampler(d_sample)}): {floor:.1f} GFLOP; at 100% of the matmul ceiling "
              f"that is at most {d_sample['matmul_gflops'] / floor:.2f} pairs/s.",
              f"{TARGET_PAIRS_PER_S:g} pairs/s at the achieved {d_sample['achieved_gflops']:.0f} GFLOP/s allows "
              f"{budget:.1f} GFLOP per pair ({budget / d_sample['steps']:.2f} per step).",
              f"TARGET ({TARGET_PAIRS_PER_S:g} guided slice pairs/s, preset {preset.name!r} defaults, "
              f"batch {d_sample['batch']}): " + ("MET" if d_sample["images_per_s"] >= TARGET_PAIRS_PER_S else "NOT MET")
              + f" at {d_sample['images_per_s']:.2f} pairs/s"]
    return lines


def before_after(figures: dict[str, Any]) -> list[str]:
    """The preset beside its earlier design, measured in the same run."""
    before, after = figures["before"], figures["default"]

    def row(label: str, key: Callable[[dict[str, Any]], float], form: str) -> str:
        old, new = key(before), key(after)
        return f"{label:<44}{format(old, form):>16}{format(new, form):>16}{f'x{new / old:.2f}':>14}"

    share = lambda part: lambda f: f[part]["achieved_gflops"] / f[part]["matmul_gflops"]
    return ["", f"{'before and after (same run)':<44}{'before':>16}{'after':>16}{'change':>14}",
            row("  training steps/s", lambda f: f["train"]["steps_per_s"], ".4f"),
            row("  training GFLOP per sample", lambda f: f["train"]["gflop_per_sample"], ".2f"),
            row("  training GFLOP/s / matmul ceiling", share("train"), ".1%"),
            row("  sampling slice pairs/s", lambda f: f["sample"]["images_per_s"], ".3f"),
            row("  sampling GFLOP per pair", lambda f: f["sample"]["gflop_per_image"], ".1f"),
            row("  sampling GFLOP/s / matmul ceiling", share("sample"), ".1%")]


def main() -> None:
    embedded = sorted(name for name, preset in PRESETS.items() if preset.family == "embedded")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=embedded)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine this targets has 2 cores)")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps and a sampling batch of 8")
    parser.add_argument("--sample-batch", type=int, help="pairs per pipeline call for the default "
                        f"(default: {FULL.sample_batch}, {QUICK.sample_batch} with --quick)")
    parser.add_argument("--naive-batch", type=int, default=2,
                        help="batch of the naive measurements, scaled to the preset's (0: the default's batches)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--only", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_cpu_attention_flops()
    if args.only:
        print("RESULT " + json.dumps(run_part(args.only, args)), flush=True)
        return

    check_attention_flops()
    preset = get_preset(args.preset)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "load_average_start": os.getloadavg()}
    print(f"generator benchmark: preset {preset.name!r} ({preset.description}), {'quick' if args.quick else 'full'}")
    print(f"{machine['cpu']}, {machine['cores']} cores, {args.threads} torch threads, torch {torch.__version__}, fp32; "
          f"load average {machine['load_average_start'][0]:.1f} (above {args.threads}: timings are inflated)")
    print("attention FLOP formulas: hand count matches", flush=True)
    results = {part: spawn(part, args) for part in PARTS}
    machine["load_average_end"] = os.getloadavg()
    figures = {"preset": preset.name, "quick": args.quick, "machine": machine,
               "naive": {"train": results["naive-train"], "sample": results["naive-sample"],
                         "description": f"full-resolution pixel space, attention at every level, "
                                        f"attention_head_dim={NAIVE_HEAD_DIM}, ddim 50 steps"},
               "default": {"train": results["default-train"], "sample": results["default-sample"]},
               "before": {"train": results["before-train"], "sample": results["before-sample"],
                          "description": "the full-resolution mask through a strided ControlNet embedding"}}
    default_sample, naive_sample = results["default-sample"], results["naive-sample"]
    figures["ratios"] = {
        "train_speedup": results["default-train"]["samples_per_s"] / results["naive-train"]["samples_per_s"],
        "sampling_speedup": default_sample["images_per_s"] / naive_sample["images_per_s"],
        "flop_reduction_per_image": naive_sample["gflop_per_image"] / default_sample["gflop_per_image"],
    }
    figures["target"] = {"pairs_per_s": TARGET_PAIRS_PER_S, "met": default_sample["images_per_s"] >= TARGET_PAIRS_PER_S}
    print("\n".join(report(figures, preset) + before_after(figures)))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
