"""How long Cancel takes in the Segment dock, before and after the stop event (not a test).

Cancel used to take effect between batches of tiles only: on a large image the default plan runs
one ~1040 px tile per batch, so Cancel waited for a whole batch. The dock now also sets a stop
event that the engines check inside a batch (:mod:`napari_unet.inference.backends.interrupt`). This
prints, for the built-in nuclei model on a random image with the default tile plan, per engine:
the longest time between two progress events (the old wait after Cancel, in the worst case) and
the time from setting the stop event, half-way through a batch, to the generator's last event.

Usage (from the repository root)::

    python benchmarks/bench_cancel.py --size 4096 --engines openvino-int8 torch
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def batch_times(model, image, engine: str, batches: int) -> list[float]:
    """Seconds of the first ``batches`` batches (between progress events)."""
    from napari_unet.inference.tiling.predict import predict_tiled_iter

    gen = predict_tiled_iter(model, image, device="cpu", engine=engine)
    stamps = [time.perf_counter()]
    for _ in range(batches):
        next(gen)
        stamps.append(time.perf_counter())
    gen.close()
    return list(np.diff(stamps))


def _stop_now(stop: threading.Event, set_at: list[float]) -> None:
    set_at.append(time.perf_counter())
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["auto", "torch"])
    args = parser.parse_args()
    import torch

    from napari_unet.inference.backends.engines import engine_runner, resolve_engine
    from napari_unet.inference.tiling.predict import predict_tiled_iter
    from napari_unet.inference.tiling.tile_plan import plan_tiles
    from napari_unet.zoo.resolve import resolve_model

    torch.set_num_threads(args.threads)
    model = resolve_model(None)
    image = np.random.default_rng(0).normal(size=(1, args.size, args.size)).astype(np.float32)
    plan = plan_tiles(model, image.shape[1:])
    print(f"{args.size}x{args.size}: {plan.n_tiles} tiles of {plan.tile_shape}, one per batch")
    for name in args.engines:
        engine = resolve_engine(name, model, torch.device("cpu"), pixels=args.size**2)
        engine_runner(model, engine, torch.device("cpu"))  # exported / compiled before timing
        times = batch_times(model, image, engine, 3)
        batch = float(np.median(times[1:]))
        stop = threading.Event()
        gen = predict_tiled_iter(model, image, device="cpu", engine=engine, stop=stop)
        next(gen)  # the first batch
        set_at: list[float] = []
        timer = threading.Timer(batch / 2, _stop_now, (stop, set_at))
        timer.start()
        next(gen)  # comes back as soon as the batch in flight is dropped
        latency = time.perf_counter() - set_at[0]
        gen.close()
        print(
            f"  {engine}: one batch {batch:.2f} s (the wait after Cancel before); stop set "
            f"half-way through a batch -> stopped {latency:.3f} s later",
            flush=True,
        )


if __name__ == "__main__":
    main()
