"""Time to the first result in napari: press Segment on the sample in a fresh viewer.

Usage (from the repository root, with a display or under ``xvfb-run``)::

    xvfb-run -a python benchmarks/bench_first_result.py [--image sample|mosaic] [--engine auto]

Each measurement runs in a fresh Python process (cold imports, no model loaded): open a
viewer, add the sample image (the plugin's sample data), dock the Segment widget, press
Segment, and wait until the labels layer appears. Prints the seconds to a ready viewer
(imports included) and from the press to the labels. ``--image mosaic``: a 2048x2048 tiling
of the sample instead (the first press of a model with a faster engine includes its export).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, time
t0 = time.perf_counter()
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from napari_unet._napari.sample_data import nuclei_sample
from napari_unet._napari.segment.segment_widget import SegmentWidget
image_kind, engine, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
viewer = napari.Viewer(show=False)
image = nuclei_sample()[0][0]
if image_kind == "mosaic":
    image = np.tile(image, (8, 6))[:2048, :2048]
viewer.add_image(image, name="nuclei")
widget = SegmentWidget(viewer)
viewer.window.add_dock_widget(widget)
widget.engine.value = engine
app = QApplication.instance()
app.processEvents()
t1 = time.perf_counter()
import torch  # imported by the run anyway; set the thread count like the other benchmarks
torch.set_num_threads(threads)
t_press = time.perf_counter()
widget.run()
while "nuclei labels" not in viewer.layers:
    app.processEvents()
    time.sleep(0.005)
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t_press:.2f}")
viewer.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=("sample", "mosaic"), default="sample")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for i in range(args.repeats):
        cmd = [sys.executable, "-c", CHILD, args.image, args.engine, str(args.threads)]
        ready, result = map(float, subprocess.check_output(cmd, text=True).split()[-2:])
        print(
            f"RESULT run {i + 1}: viewer + widget ready {ready:.1f} s (cold imports); "
            f"Segment pressed -> labels {result:.1f} s ({args.image}, engine {args.engine})",
            flush=True,
        )


if __name__ == "__main__":
    main()
