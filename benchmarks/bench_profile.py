"""Where the default Segment's time goes, against a plain eager forward (not part of the tests).

Usage (from the repository root)::

    python benchmarks/bench_profile.py [--repeats 3] [--threads 2] [--size 2048] [--no-eager]

The image: the bundled sample (260x347, ``napari_unet.common.sample``) tiled 8 x 6 and cut to
``--size`` x ``--size`` (2048 x 2048 by default), as ``bench_first_result.py --image mosaic``.

Compared, alternating in one process (each figure the best of ``--repeats``, after one
untimed warm-up Segment that exports and compiles the engine):

(a) the default ``segment(image)``: built-in model, automatic engine, automatic object size,
    default tiles, post-processing;
(b) a plain eager torch forward of the same built-in model over the **whole** image in one
    call (eval mode, NCHW float32, batch norm not folded, ``torch.inference_mode``), on the
    image normalised as Segment normalises it.

Prints the ratio (b) / (a), then where (a) goes:

* by stage, from the progress events' timestamps (an event reports the work just finished, so
  the time up to an event goes to its stage): engine, measuring objects (the size passes:
  their network and post-processing), predict (normalisation, reading tiles, network,
  blending), postprocess seeds / watershed / size filter, done (report), and what follows the
  last event (axes back, return);
* by function, from a cProfile run of (a): the time inside the functions that make up each
  part (cumulative, so the rows overlap where they nest), and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import torch

from napari_unet import segment
from napari_unet.common.sample import load_sample
from napari_unet.inference.frames import SegmentJob
from napari_unet.inference.pipeline import builtin_model

#: cProfile rows summed per part of the run: (label, file suffix, function name)
PARTS = [
    ("network (engine calls)", "backends/engines.py", "run"),
    ("  blending tiles", "tiling/predict.py", "_accumulate"),
    ("  reading tiles", "tiling/tiles.py", "read_window"),
    ("normalisation", "inference/frames.py", "normalized_frame"),
    ("noise check (has_structure)", "images/domain.py", "has_structure"),
    ("finite check", "images/normalize.py", "check_finite"),
    ("size passes (all)", "sizing/size_search.py", "_measure_at"),
    ("  resampling", "sizing/rescale.py", "resample"),
    ("  measuring labels", "sizing/size.py", "diameter_from_labels"),
    ("post-processing (all passes)", "labels/postprocess.py", "instance_labels_chunked"),
    ("  seeds", "labels/postprocess.py", "_seed_region"),
    ("    distance transform", "labels/postprocess.py", "_distance_to_background"),
    ("    smoothing", "scipy/ndimage/_filters.py", "gaussian_filter"),
    ("    h-maxima", "hmaxima.py", "h_maxima_positive"),
    ("  watershed", "labels/postprocess.py", "_watershed_region"),
    ("doubt count", "images/domain.py", "add"),
    ("report", "inference/pipeline.py", "_report"),
]


def mosaic(size: int) -> np.ndarray:
    """The bundled sample tiled to ``size`` x ``size`` (uint8)."""
    image = load_sample()[0]
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1]))
    return np.ascontiguousarray(np.tile(image, reps)[:size, :size])


def timed_segment(image: np.ndarray) -> tuple[float, list[tuple[str, float]], np.ndarray]:
    """Seconds of a default segment(), the (stage, seconds) list, the labels."""
    marks: list[tuple[str, float]] = []
    last = [0.0]

    def on_event(event) -> None:
        now = time.perf_counter()
        stage = event.stage
        if stage == "postprocess" and event.total == 3 and event.done:
            stage += " " + ("seeds", "watershed", "size filter")[event.done - 1]
        marks.append((stage, now - last[0]))
        last[0] = now

    t0 = last[0] = time.perf_counter()
    labels = segment(image, device="cpu", progress=on_event)
    end = time.perf_counter()
    marks.append(("after the last event", end - last[0]))
    return end - t0, marks, labels


def by_stage(marks: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage, seconds in marks:
        if stage.startswith("preparing"):
            stage = "engine (prepared)"
        out[stage] = out.get(stage, 0.0) + seconds
    return out


def eager_input(image: np.ndarray, model) -> torch.Tensor:
    """The image normalised as Segment does, ``(1, 1, Y, X)`` float32."""
    job = SegmentJob(model, image, "YX", "instance", post={}, keep_probs=False)
    return torch.from_numpy(job.normalized_frame(()))[None]


def profile_parts(image: np.ndarray, top: int) -> None:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    segment(image, device="cpu")
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    rows = stats.stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    print(f"cProfile of one default Segment: {total:.2f} s (profiler overhead included)")
    for label, suffix, name in PARTS:
        cum = sum(
            v[3]
            for (file, _, func), v in rows.items()
            if func == name and file.replace("\\", "/").endswith(suffix)
        )
        calls = sum(
            v[1]
            for (file, _, func), v in rows.items()
            if func == name and file.replace("\\", "/").endswith(suffix)
        )
        print(f"  {label:32s} {cum:6.2f} s  {100 * cum / total:5.1f}%  ({calls} calls)")
    print(f"top {top} functions by own time:")
    own = sorted(rows.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, func), v in own:
        where = "/".join(file.replace("\\", "/").split("/")[-2:])
        print(f"  {v[2]:6.2f} s own, {v[3]:6.2f} s cum, {v[1]:6d} calls  {func} ({where}:{line})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-eager", action="store_true", help="skip the eager reference")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = mosaic(args.size)
    model = builtin_model("nuclei")
    reference = _eager_copy(model)
    x = eager_input(image, model)

    def eager() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            reference(x)
        return time.perf_counter() - t0

    segment(image, device="cpu")  # warm-up: export, load, verify, compile the tile shapes
    runs, eager_times, ratios, objects = [], [], [], set()
    for i in range(args.repeats):
        e = None if args.no_eager else eager()
        t, marks, labels = timed_segment(image)
        runs.append((t, marks))
        objects.add(int(labels.max()))
        if e is not None:
            eager_times.append(e)
            ratios.append(e / t)
        eager_text = "" if e is None else f", eager forward {e:.2f} s, ratio {e / t:.2f}"
        print(f"round {i + 1}: segment {t:.2f} s{eager_text}", flush=True)
    best_t, best_marks = min(runs, key=lambda r: r[0])
    print(
        f"{args.size}x{args.size} sample mosaic, {args.threads} torch threads, "
        f"best of {args.repeats}; objects {sorted(objects)}"
    )
    if eager_times:
        ref = min(eager_times)
        print(
            f"RESULT eager forward (whole image) / default segment: {ref / best_t:.2f}x "
            f"(best times {ref:.2f} s / {best_t:.2f} s; per round "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print(f"RESULT default segment {best_t:.2f} s by stage (best run):")
    for stage, seconds in by_stage(best_marks).items():
        print(f"  {stage:32s} {seconds:6.2f} s  {100 * seconds / best_t:5.1f}%")
    if not args.no_profile:
        profile_parts(image, args.top)


def _eager_copy(model) -> torch.nn.Module:
    """A plain eval-mode copy of ``model`` (NCHW, batch norm as trained, nothing folded)."""
    import copy

    return copy.deepcopy(model).eval()


if __name__ == "__main__":
    main()
