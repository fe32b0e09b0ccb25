"""Benchmarks of tiled inference (not part of the test suite); each prints ratios from one run.

Usage (from the repository root; each part is a sub-command, ``all`` runs them in turn)::

    python benchmarks/bench_tiling.py ratio   # tiled vs whole-image forward, 2048x2048
    python benchmarks/bench_tiling.py monai   # vs MONAI sliding_window_inference (pip install monai)
    python benchmarks/bench_tiling.py flops   # achieved conv GFLOP/s vs the machine's matmul GFLOP/s
    python benchmarks/bench_tiling.py scale   # time and peak RSS for 1024^2, 4096^2, 8192^2 (zarr)

Options: ``--threads`` (torch threads, default 2), ``--base`` (base filters, default 32; the
scale benchmark defaults to 8 to stay short, its point is the growth with image size),
``--depth`` (default 4), ``--size`` (default 2048), ``--repeats`` (default 1).
Timings alternate between the compared methods so that load on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from napari_unet.common.device import resolve_device
from napari_unet.inference.tiling.predict import predict_tiled
from napari_unet.inference.tiling.tile_plan import plan_tiles
from napari_unet.model.inference import inference_model, to_model_layout
from napari_unet.model.unet import UNet


def make_model(args: argparse.Namespace, base: int | None = None) -> UNet:
    torch.manual_seed(0)
    net = UNet(1, 3, depth=args.depth, base_filters=base or args.base)
    return net.eval()


def image_2d(size: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, size, size)).astype(np.float32)


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    """Minimum wall time of each function, calling them in turn ``repeats`` times.

    All times are kept in ``RUNS`` so that :func:`paired` can compare the runs pair by pair.
    """
    RUNS.clear()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            RUNS.setdefault(name, []).append(time.perf_counter() - t0)
            print(f"  {name}: {RUNS[name][-1]:.2f} s", flush=True)
    return {name: min(t) for name, t in RUNS.items()}


def paired(numerator: str, denominator: str) -> str:
    """Ratios of the alternating runs, pair by pair, and their median."""
    ratios = [a / b for a, b in zip(RUNS[numerator], RUNS[denominator])]
    return f"pairs {', '.join(f'{r:.3f}' for r in ratios)}; median {np.median(ratios):.3f}"


RUNS: dict[str, list[float]] = {}


def whole_forward(net: UNet, image: np.ndarray, layout: bool) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(image)[None]
        x = to_model_layout(x, net) if layout else x
        return torch.softmax(net(x), 1)[0].numpy()


def bench_ratio(args: argparse.Namespace) -> None:
    net = make_model(args)
    fast = inference_model(net, torch.device("cpu"))
    image = image_2d(args.size)
    plan = plan_tiles(net, image.shape[1:])
    print(
        f"ratio: {args.size}^2, base {args.base}, depth {args.depth}; default plan: tiles "
        f"{plan.tile_shape}, grid {plan.grid}, overlaps {plan.axes[0].overlaps}"
    )
    fast_name, tiled_name = "whole fast (folded BN, channels-last)", "tiled (predict_tiled)"
    times = best_of(
        {
            fast_name: lambda: whole_forward(fast, image, True),
            tiled_name: lambda: predict_tiled(net, image, device="cpu"),
        },
        args.repeats,
    )
    tiled = times[tiled_name]
    pixels = np.prod([a.n_tiles * a.tile for a in plan.axes]) / args.size**2
    print(
        f"RESULT throughput tiled / whole-image fast forward: {times[fast_name] / tiled:.3f} "
        f"(best of each; {paired(fast_name, tiled_name)}; "
        f"the tiles compute {pixels:.3f}x the image's pixels)"
    )
    if args.eager:
        eager = best_of({"whole eager": lambda: whole_forward(net, image, False)}, 1)
        print(
            f"RESULT throughput tiled / whole-image eager forward: {eager['whole eager'] / tiled:.3f}"
        )


def bench_monai(args: argparse.Namespace) -> None:
    from monai.inferers import sliding_window_inference

    net = make_model(args)
    image = image_2d(args.size)
    plan = plan_tiles(net, image.shape[1:])
    tile, overlap = plan.tile_shape, min(plan.axes[0].overlaps or (0,))
    fast = inference_model(net, torch.device("cpu"))

    def monai_run(model: torch.nn.Module) -> np.ndarray:
        with torch.inference_mode():
            x = to_model_layout(torch.from_numpy(image)[None], model)
            logits = sliding_window_inference(
                x,
                roi_size=tile,
                sw_batch_size=1,
                predictor=model,
                overlap=overlap / tile[0],
                mode="gaussian",
            )
            return torch.softmax(logits, 1)[0].numpy()

    ours = lambda: predict_tiled(  # noqa: E731
        net, image, tile_shape=tile, overlap=overlap, batch_size=1, device="cpu"
    )
    print(f"monai: {args.size}^2, tile {tile}, overlap {overlap} px, gaussian, batch 1")
    times = best_of(
        {"MONAI (our fast net)": lambda: monai_run(fast), "predict_tiled": ours}, args.repeats
    )
    print(
        f"RESULT MONAI with the same fast net / predict_tiled: "
        f"{times['MONAI (our fast net)'] / times['predict_tiled']:.3f} "
        f"(best of each; {paired('MONAI (our fast net)', 'predict_tiled')})"
    )
    if args.eager:
        eager = best_of({"MONAI (eager net)": lambda: monai_run(net)}, 1)
        print(
            f"RESULT MONAI eager time / predict_tiled time: "
            f"{eager['MONAI (eager net)'] / times['predict_tiled']:.3f}"
        )
    diff = np.abs(monai_run(fast) - ours()).max()
    print(f"  max |MONAI - ours| probabilities: {diff:.2e} (different tile starts and weights)")


def conv_flops(net: UNet, spatial: tuple[int, ...]) -> float:
    """Floating-point operations (2 per multiply-add) of the convolutions for one input."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        w = module.weight
        per_output = (
            w.shape[1] * np.prod(w.shape[2:])
            if not isinstance(module, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
            else w.shape[0]
        )
        total += 2.0 * per_output * output.numel()

    kinds = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.inference_mode():
        net(torch.zeros(1, net.in_channels, *spatial))
    for h in handles:
        h.remove()
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul speed with the current torch threads."""
    a = torch.randn(n, n)
    with torch.inference_mode():
        a @ a
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ a
        return repeats * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def bench_flops(args: argparse.Namespace) -> None:
    net = make_model(args)
    image = image_2d(args.size)
    plan = plan_tiles(net, image.shape[1:])
    flops = conv_flops(net, plan.tile_shape) * plan.n_tiles
    t0 = time.perf_counter()
    predict_tiled(net, image, device="cpu")
    elapsed = time.perf_counter() - t0
    matmul = max(matmul_gflops(), matmul_gflops())
    achieved = flops / elapsed / 1e9
    print(f"flops: {args.size}^2 tiled, {flops / 1e9:.0f} GFLOP of convolutions in {elapsed:.1f} s")
    print(
        f"RESULT conv GFLOP/s {achieved:.1f}, matmul GFLOP/s {matmul:.1f}, "
        f"ratio {achieved / matmul:.3f}"
    )


_SCALE_CHILD = """
import sys, time, numpy as np, torch, zarr
from napari_unet.model.unet import UNet
from napari_unet.inference.tiling.predict import predict_tiled
size, base, depth, threads, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def peak_mb():  # VmHWM: peak resident set of this process (reset by exec, unlike ru_maxrss)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024
torch.set_num_threads(threads)
torch.manual_seed(0)
net = UNet(1, 3, depth=depth, base_filters=base).eval()
predict_tiled(net, np.zeros((1, 64, 64), np.float32), device="cpu")  # warm-up
src = zarr.open_array(folder + "/in.zarr", mode="r")
out = zarr.create_array(folder + "/out.zarr", shape=(3, size, size), chunks=(3, 512, 512), dtype="f4", fill_value=0)
rss0 = peak_mb()
t0 = time.perf_counter()
predict_tiled(net, src, out=out, device="cpu")
print(time.perf_counter() - t0, rss0, peak_mb())
"""


def bench_scale(args: argparse.Namespace) -> None:
    import zarr

    base = args.scale_base
    print(f"scale: zarr in, zarr out, base {base}, depth {args.depth}, {args.threads} threads")
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            src = zarr.create_array(
                f"{folder}/in.zarr", shape=(1, size, size), chunks=(1, 512, 512), dtype="f4"
            )
            rng = np.random.default_rng(0)
            for y in range(0, size, 512):  # written band by band: never the whole image
                src[:, y : y + 512] = rng.normal(size=(1, min(512, size - y), size)).astype(
                    np.float32
                )
            cmd = [
                sys.executable,
                "-c",
                _SCALE_CHILD,
                str(size),
                str(base),
                str(args.depth),
                str(args.threads),
                folder,
            ]
            dt, rss_before, rss_peak = map(float, subprocess.check_output(cmd, text=True).split())
        rows.append((size, dt, rss_peak))
        print(
            f"  {size}^2: {dt:.1f} s, {dt / size**2 * 1e9:.0f} ns/px, peak RSS {rss_peak:.0f} MB "
            f"(before the run {rss_before:.0f} MB)",
            flush=True,
        )
    small, big = rows[0], rows[-1]
    print(
        f"RESULT time per pixel {big[0]}^2 / {small[0]}^2: "
        f"{big[1] / big[0] ** 2 / (small[1] / small[0] ** 2):.3f}"
    )
    print(
        f"RESULT peak RSS {big[0]}^2 / {small[0]}^2: {big[2] / small[2]:.3f} "
        f"({big[2]:.0f} MB at {big[0]}^2)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["ratio", "monai", "flops", "scale", "all"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--scale-base", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192], help="scale")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs, best kept")
    parser.add_argument("--eager", action="store_true", help="also time the plain eager model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, device {resolve_device('cpu')}")
    parts = {"ratio": bench_ratio, "monai": bench_monai, "flops": bench_flops, "scale": bench_scale}
    for name, fn in parts.items():
        if args.what in (name, "all"):
            fn(args)
    print(
        f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
