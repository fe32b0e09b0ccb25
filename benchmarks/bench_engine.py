"""The default Segment per inference engine vs a plain eager forward (not part of the tests).

Usage (from the repository root)::

    python benchmarks/bench_engine.py [--repeats 2] [--threads 2] [--engines torch openvino ...]

The image: 2048x2048, DSB 2018 stage-1 test fluorescence images (the held-out ones, minus the
duplicates of training images) packed side by side in rows, tallest first, gaps filled
with the image's median. For each engine it times the default ``segment(image)`` with the
built-in model (automatic object size, default tiles and overlap, post-processing), after one
warm-up run that exports and loads the engine; and a plain eager whole-image forward of a
reference ``UNet(1, 3, depth=4, base_filters=32)`` (random weights, eval mode, no folding, NCHW,
under ``torch.inference_mode``). The runs alternate (reference, engine 1, engine 2, ...) so
load on the shared machine hits all of them; each figure is the best of ``--repeats``.

Prints per engine: the Segment time and where it goes (measuring objects / predict /
postprocess, from the progress events), MPix/s, useful GFLOP/s (the convolutions of one
whole-image forward of the built-in model, divided by the Segment time) as a fraction of the
measured float32 matmul peak, the speed-up over the eager reference, and the peak RSS growth.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import UNet, load_model, segment
from napari_unet.inference.backends.engines import available_engines, resolve_engine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_test"


def dsb_mosaic(size: int = 2048) -> np.ndarray:
    """``size`` x ``size`` uint8: DSB test fluorescence images packed in rows (shelf packing)."""
    skip = set((DATA / "exclude_duplicates_of_train.txt").read_text().split())
    with open(DATA / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "fluorescence"]
    # tallest first, so that the rows pack tightly
    rows.sort(key=lambda r: (-int(r["height"]), r["id"]))
    ids = [r["id"] for r in rows if r["id"] not in skip]
    canvas = np.full((size, size), -1, np.int32)
    y = x = row_h = 0
    for i in ids * 4:
        img = tifffile.imread(DATA / "images" / f"{i}.tif")
        h, w = min(img.shape[0], size), min(img.shape[1], size)
        if x + w > size:
            y, x, row_h = y + row_h, 0, 0
        if y + h > size:
            continue
        canvas[y : y + h, x : x + w] = img[:h, :w]
        x, row_h = x + w, max(row_h, h)
    filled = canvas >= 0
    canvas[~filled] = int(np.median(canvas[filled]))
    return canvas.astype(np.uint8)


def conv_flops(net: torch.nn.Module, spatial: tuple[int, ...]) -> float:
    """Floating-point operations (2 per multiply-add) of the convolutions for one input."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        w = module.weight
        transposed = isinstance(module, torch.nn.ConvTranspose2d)
        per_output = w.shape[0] if transposed else w.shape[1] * np.prod(w.shape[2:])
        total += 2.0 * float(per_output) * output.numel()

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.inference_mode():
        net(torch.zeros(1, 1, *spatial))
    for h in handles:
        h.remove()
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n)
    with torch.inference_mode():
        a @ a
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ a
        return repeats * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def reset_peak() -> float:
    """Reset the process's peak RSS (Linux: /proc/self/clear_refs) and return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak_mb() -> float:
    return _status("VmHWM")


def _status(key: str) -> float:
    line = next(x for x in open("/proc/self/status") if x.startswith(key))
    return int(line.split()[1]) / 1024


def timed_segment(image: np.ndarray, model, engine: str) -> tuple[float, dict, float]:
    """Seconds of a default segment(), seconds per stage, peak RSS growth (MB).

    An event reports work just finished (a batch of tiles), so the time up to an event goes to
    that event's stage; the time after the last one is the post-processing.
    """
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def on_event(event) -> None:
        now = time.perf_counter()
        stages[event.stage] = stages.get(event.stage, 0.0) + now - last[0]
        last[0] = now

    base = reset_peak()
    t0 = last[0] = time.perf_counter()
    segment(image, model, device="cpu", engine=engine, progress=on_event)
    end = time.perf_counter()
    stages["post-processing"] = end - last[0]
    return end - t0, stages, peak_mb() - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--engines", nargs="+", default=available_engines())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = dsb_mosaic(args.size)
    model = load_model(None)
    torch.manual_seed(0)
    reference = UNet(1, 3, depth=4, base_filters=32).eval()
    x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]

    def eager() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            reference(x)
        return time.perf_counter() - t0

    for engine in args.engines:  # warm-up: export, load, verify, compile the tile shapes
        segment(image, model, device="cpu", engine=engine)
    best: dict[str, tuple[float, dict, float]] = {}
    ratios: dict[str, list[float]] = {engine: [] for engine in args.engines}
    ref_times = []
    for _ in range(args.repeats):
        ref_times.append(eager())
        for engine in args.engines:
            run = timed_segment(image, model, engine)
            if engine not in best or run[0] < best[engine][0]:
                best[engine] = run
            ratios[engine].append(ref_times[-1] / run[0])
            print(f"  {engine}: {run[0]:.1f} s (eager reference {ref_times[-1]:.1f} s)", flush=True)
    ref = min(ref_times)
    default = resolve_engine("auto", model, torch.device("cpu"), args.size**2)
    print(f"the default (engine='auto') runs the built-in model with {default!r}")
    peak = max(matmul_gflops(), matmul_gflops())
    useful = conv_flops(model, (args.size, args.size)) / 1e9
    mpix = args.size**2 / 1e6
    print(
        f"{args.size}x{args.size} DSB mosaic, {args.threads} threads, best of {args.repeats}; "
        f"eager reference forward {ref:.1f} s ({mpix / ref:.2f} MPix/s); matmul peak "
        f"{peak:.0f} GFLOP/s; useful work {useful:.0f} GFLOP"
    )
    for engine, (t, stages, mem) in best.items():
        split = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
        print(
            f"RESULT {engine}: segment {t:.1f} s ({split}); {mpix / t:.2f} MPix/s; useful "
            f"{useful / t:.0f} GFLOP/s = {useful / t / peak:.2f} of matmul peak; "
            f"eager reference / segment {ref / t:.2f}x (best times; per round: "
            f"{', '.join(f'{r:.2f}' for r in ratios[engine])}); peak RSS +{mem:.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
