"""Take the README's screenshot: the sample, the built-in model's labels and the Segment widget.

Opens napari with the bundled sample, runs the U-Net Segment widget (built-in model) and the
U-Net Evaluate widget against the annotation, as a user would, then saves
``docs/screenshot.png``. Needs a display: run it under ``xvfb-run -a``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def wait_until(condition, timeout: float = 300.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            sys.exit("timed out")
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-unet", "nuclei")
    _, segment_widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Segment")
    segment_widget.run()
    wait_until(lambda: not segment_widget.running)
    _, evaluate_widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Evaluate")
    evaluate_widget.prediction.value = viewer.layers["nuclei labels"]
    evaluate_widget.ground_truth.value = viewer.layers["nuclei ground truth"]
    evaluate_widget.run()
    wait_until(lambda: evaluate_widget.status.value.startswith("done"))
    viewer.layers["nuclei ground truth"].visible = False
    for name in [layer.name for layer in viewer.layers if layer.name.endswith("errors")]:
        viewer.layers[name].visible = False
    viewer.reset_view()
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"{out}: {segment_widget.status.value}; {evaluate_widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
