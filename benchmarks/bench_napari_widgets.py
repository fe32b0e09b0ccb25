"""The napari docks under load (not part of the test suite): GUI responsiveness and the cost
of drawing while training. Prints figures from one run.

Usage (from the repository root; needs a display, e.g. Xvfb at laptop size)::

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_napari_widgets.py

* **Responsiveness**: a 10 ms QTimer ticks on the GUI thread while the U-Net Segment dock
  segments the bundled sample with the built-in model, the U-Net Train dock trains a small
  network and the U-Net Evaluate dock scores the result; the longest gap between ticks is how
  long the GUI froze (goal: < 0.2 s on an idle machine).
* **Training in the dock vs the Python API**: the same small training run (same pairs, same
  settings, same seed) through the Train dock (live plot, status, progress bar, canvas) and
  through the engine directly (:func:`napari_unet._napari.train._train_job.training_job`, which is
  ``train_iter`` plus reading the layers' arrays), alternating, best of ``--repeats``; the
  ratio should be <= 1.10. The dock is timed twice: as napari shows it, and with napari's own
  "in progress" spinner (the animated GIF in the status bar, shown while any napari progress
  bar is active) paused, which separates the plugin's cost (plot, status, progress bar) from
  napari's. The first dock run (imports, first draws) is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication


class Ticks:
    """Timestamps of a 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def __enter__(self) -> Ticks:
        self.times = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
        self.times.append(time.perf_counter())

    @property
    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))


def wait_until(condition, timeout: float = 1800.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            sys.exit("timed out")
        QApplication.processEvents()
        time.sleep(0.005)


def small_training(train) -> None:
    arch, hyper = train.architecture, train.hyper
    arch.depth.value, arch.base_filters.value = 3, 8
    hyper.patch.value, hyper.batch_size.value = 96, 4
    hyper.epochs.value, hyper.steps.value = 2, 25
    hyper.augment.value, hyper.device.value = False, "cpu"


def napari_spinners(viewer) -> list:
    """The QMovies of napari's window (its "in progress" spinner), to pause them."""
    from qtpy.QtWidgets import QLabel

    labels = viewer.window._qt_window.findChildren(QLabel)
    return [label.movie() for label in labels if label.movie() is not None]


def dock_training(train, spinners=()) -> tuple[float, float]:
    """One run of the Train dock; returns (seconds, longest GUI gap). ``spinners``: paused."""
    with Ticks() as ticks:
        t0 = time.perf_counter()
        train.run()
        if spinners:  # napari starts its spinner when the progress bar appears
            wait_until(lambda: time.perf_counter() - t0 > 0.3 or train.worker is None)
            for movie in spinners:
                movie.setPaused(True)
        wait_until(lambda: train.worker is None)
        seconds = time.perf_counter() - t0
    return seconds, ticks.longest_gap


def api_training(train) -> float:
    """The dock's run through the engine alone; returns seconds."""
    from napari_unet._napari.train._train_job import training_job
    from napari_unet._napari.train._train_settings import make_config

    sources = train.pairs.sources()
    config = make_config(train.architecture, train.hyper)
    t0 = time.perf_counter()
    gen = training_job(sources, config, threading.Event())
    for _ in gen:
        pass
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample("napari-unet", "nuclei")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Segment")
    _, train = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Train")
    _, ev = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Evaluate")
    wait_until(
        lambda: "torch" in sys.modules and "computing" not in train.architecture.summary.value
    )

    with Ticks() as ticks:
        seg.run()
        wait_until(lambda: not seg.running)
    print(f"Segment: {seg.status.value}; longest GUI gap {ticks.longest_gap:.3f} s")
    ev.prediction.value = viewer.layers["nuclei labels"]
    ev.ground_truth.value = viewer.layers["nuclei ground truth"]
    with Ticks() as ticks:
        ev.run()
        wait_until(lambda: not ev.running)
    print(f"Evaluate: {ev.status.value}; longest GUI gap {ticks.longest_gap:.3f} s")

    small_training(train)
    dock_training(train)  # warm-up
    widget_s, paused_s, api_s, gaps = [], [], [], []
    spinners = napari_spinners(viewer)
    for _ in range(args.repeats):
        seconds, gap = dock_training(train)
        widget_s.append(seconds)
        gaps.append(gap)
        api_s.append(api_training(train))
        paused_s.append(dock_training(train, spinners)[0])
        api_s.append(api_training(train))
    print(f"Train: {train.message.value}; longest GUI gap {max(gaps):.3f} s")
    best = min(api_s)
    print(
        f"training (best of {args.repeats}): dock {min(widget_s):.1f} s, dock with napari's "
        f"spinner paused {min(paused_s):.1f} s, API {best:.1f} s: ratios "
        f"{min(widget_s) / best:.2f} and {min(paused_s) / best:.2f}"
    )
    viewer.close()


if __name__ == "__main__":
    main()
