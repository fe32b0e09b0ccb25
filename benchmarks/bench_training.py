"""Training throughput: samples/s of one optimisation step for 256x256 patches, batch 8.

Times the training core's own step (forward, weighted CE + Dice loss, backward, gradient
clipping, AdamW) for base-16 and base-32 U-Nets (depth 4, batch norm, 3 classes), in the
default memory layout and in channels-last (and, with ``--compile``, under ``torch.compile``),
and the data pipeline (patch sampling + augmentation) on its own. Ratios are measured in the
same run, so they hold on a busy machine where the absolute figures do not.

Run: ``python benchmarks/bench_training.py [--steps 3] [--bases 16 32] [--compile]
[--device cpu|cuda] [--threads N]``. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from napari_unet.common.device import resolve_device
from napari_unet.model.unet import UNet
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.config import TrainConfig
from napari_unet.training.data.batches import draw_batch
from napari_unet.training.data.pairs import PatchSampler, prepare_pair
from napari_unet.training.loop import _train_step


def synthetic_batch(batch: int, patch: int, device: torch.device, seed: int = 0):
    """Random image, targets (3 classes), weights and an all-valid mask."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, patch, patch, generator=g)
    target = torch.randint(0, 3, (batch, patch, patch), generator=g)
    weight = torch.rand(batch, patch, patch, generator=g) + 0.5
    valid = torch.ones(batch, patch, patch, dtype=torch.bool)
    return tuple(t.to(device) for t in (image, target, weight, valid))


def training_step(base: int, variant: str, config: TrainConfig, device: torch.device):
    """A closure running one optimisation step of a fresh model in the given variant."""
    torch.manual_seed(0)
    model = UNet(1, 3, depth=config.depth, base_filters=base).to(device).train()
    batch = synthetic_batch(config.batch_size, config.patch_shape()[0], device)
    if variant in ("channels_last", "compile+channels_last"):
        model = model.to(memory_format=torch.channels_last)
        batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    net = torch.compile(model) if variant.startswith("compile") else model

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _train_step(net, optimizer, batch, config)  # type: ignore[arg-type]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def time_training(
    base: int, variants: list[str], config: TrainConfig, device: torch.device, steps: int
) -> dict[str, float]:
    """Median seconds per step of each variant, after one warm-up step each.

    The variants take turns step by step, so a load that comes and goes on a shared machine
    hits them alike and their ratios stay fair.
    """
    runners = {v: training_step(base, v, config, device) for v in variants}
    for run in runners.values():
        run()  # warm-up: allocations, compilation
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(steps):
        for v, run in runners.items():
            times[v].append(run())
    return {v: float(np.median(t)) for v, t in times.items()}


def time_data_pipeline(config: TrainConfig, batches: int) -> float:
    """Seconds to sample and augment one batch on the CPU."""
    rng = np.random.default_rng(0)
    size = 768
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for i in range(150):
        cy, cx = rng.integers(10, size - 10, 2)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(5, 12) ** 2] = i + 1
    image = np.where(labels > 0, 180.0, 20.0) + rng.normal(0, 10, labels.shape)
    pair = prepare_pair(image.astype(np.float32), labels)
    sampler = PatchSampler([pair], config.patch_shape(), config.foreground_fraction)
    draw_batch(sampler, config, 0, 0)
    t0 = time.perf_counter()
    for step in range(batches):
        draw_batch(sampler, config, 0, step + 1)
    return (time.perf_counter() - t0) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--bases", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = TrainConfig(patch_size=args.patch, batch_size=args.batch, augment=AugmentConfig())
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
        f"{args.patch}x{args.patch} patches, batch {args.batch}, depth {config.depth}, "
        f"median of {args.steps} steps"
    )
    variants = ["default", "channels_last"]
    if args.compile:
        variants += ["compile", "compile+channels_last"]
    for base in args.bases:
        seconds = time_training(base, variants, config, device, args.steps)
        for variant, sec in seconds.items():
            print(
                f"base {base:3d}  {variant:<22s} {args.batch / sec:8.2f} samples/s  "
                f"{sec:7.3f} s/step  speed vs default x{seconds['default'] / sec:.2f}"
            )
    seconds = time_data_pipeline(config, batches=max(2, args.steps))
    print(
        f"data pipeline (sample + augment, CPU)  {args.batch / seconds:8.2f} samples/s  "
        f"{seconds:7.3f} s/batch"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
