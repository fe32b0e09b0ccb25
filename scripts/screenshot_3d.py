"""Take the README's z-stack screenshot: 3D nuclei of a synthetic stack in napari's 3D view.

Opens napari with a synthetic anisotropic stack of textured nuclei (``tests/synthetic3d.py``,
z step 3x the pixel size, given as the layer's scale), runs the U-Net Segment widget with the
built-in 2D model in its default Z-stack mode (3D objects) as a user would, switches the
viewer to 3D and saves ``docs/screenshot_3d.png``. Needs a display: run it under
``xvfb-run -a``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from screenshot import wait_until  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic3d import ellipsoid_stack

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot_3d.png")
    image, _ = ellipsoid_stack((20, 160, 160), 3.0, n=45, seed=4)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.add_image(image, name="stack", scale=(3.0, 1.0, 1.0), colormap="gray")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Segment")
    widget.image.value = viewer.layers["stack"]
    widget.run()
    wait_until(lambda: not widget.running, timeout=600.0)
    viewer.layers["stack"].visible = False
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (-20.0, 40.0, 130.0)
    camera.zoom *= 0.9
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"{out}: {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
