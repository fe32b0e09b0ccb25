"""Checks of an installed napari-unet wheel, run by ``scripts/check_wheel.sh`` in a fresh venv.

Run with the fresh venv's python, from outside the checkout, under a virtual X server. Each
check prints one ``ok``/``FAIL`` line; the exit code is the number of failed checks (0 = all
passed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

PLUGIN = "napari-unet"
WIDGETS = ["U-Net Segment", "U-Net Train", "U-Net Evaluate"]
#: the packages a napari user already has; installing the plugin must not change them
KEEP = ("napari", "numpy", "torch")
#: files the wheel must carry (paths inside the wheel)
PACKAGE_DATA = [
    "napari_unet/napari.yaml",
    "napari_unet/data/nuclei.tif",
    "napari_unet/data/nuclei_labels.tif",
]
MODEL_IN_WHEEL = "napari_unet/models/nuclei.safetensors"
#: the built-in H&E model, routed to for stained colour images
HE_MODEL_IN_WHEEL = "napari_unet/models/nuclei-he.safetensors"

failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(what)


def read_freeze(path: Path) -> dict[str, str]:
    """``name -> version`` from ``pip freeze`` output (names normalised)."""
    versions = {}
    for line in path.read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            versions[name.strip().lower().replace("_", "-")] = version.strip()
    return versions


def check_wheel_contents(wheel: Path, max_mb: float) -> bool:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in PACKAGE_DATA:
        check(path in names, f"wheel contains {path}")
    check(
        not any(n.startswith(("tests/", "benchmarks/", "scripts/")) for n in names),
        "wheel holds no tests, benchmarks or scripts",
    )
    check(
        any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names),
        "wheel contains the LICENSE",
    )
    size_mb = wheel.stat().st_size / 1e6
    check(size_mb <= max_mb, f"wheel size {size_mb:.2f} MB <= {max_mb} MB")
    has_model = MODEL_IN_WHEEL in names
    check(HE_MODEL_IN_WHEEL in names, "wheel contains the built-in H&E model")
    print(f"[info] built-in model in the wheel: {'yes' if has_model else 'NO (not built yet)'}")
    return has_model


def check_versions_kept(before: Path, after: Path) -> None:
    old, new = read_freeze(before), read_freeze(after)
    for name in KEEP:
        check(
            name in old and old.get(name) == new.get(name),
            f"installing the wheel kept {name}",
            f"{old.get(name)} -> {new.get(name)}",
        )
    changed = sorted(n for n in old if n in new and old[n] != new[n])
    added = sorted(set(new) - set(old))
    print(f"[info] other packages changed: {changed or 'none'}; added: {added}")


def check_installed_from_wheel() -> None:
    import napari_unet

    location = Path(napari_unet.__file__).resolve()
    check(
        "site-packages" in location.parts, "napari_unet imports from site-packages", str(location)
    )
    meta = subprocess.run(
        [sys.executable, "-m", "pip", "show", PLUGIN], capture_output=True, text=True, check=True
    ).stdout
    check(
        "Editable project location" not in meta, "napari-unet is a regular (non-editable) install"
    )


def check_npe2_list() -> None:
    env = {**os.environ, "COLUMNS": "250"}
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run(
        [str(npe2), "list", "-f", "json", "--fields", "name,version,contributions"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    entries = {e["name"]: e for e in json.loads(out)}
    entry = entries.get(PLUGIN)
    check(entry is not None, "npe2 list shows napari-unet", f"{sorted(entries)}")
    if entry is None:
        return
    counts = entry.get("contributions", {})
    check(counts.get("widgets") == 3, "npe2 list: 3 widgets", str(counts))
    check(counts.get("sample_data") == 1, "npe2 list: 1 sample", str(counts))
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    names = [w.display_name for w in manifest.contributions.widgets]
    check(names == WIDGETS, "widgets by name", str(names))
    check([s.key for s in manifest.contributions.sample_data] == ["nuclei"], "sample key 'nuclei'")


def check_viewer() -> None:
    import napari

    viewer = napari.Viewer(show=False)
    try:
        for name in WIDGETS:
            try:
                _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
            except Exception as err:  # report every broken widget, not just the first
                traceback.print_exc()
                check(False, f"widget {name!r} opens in a viewer", repr(err))
                continue
            check(widget is not None, f"widget {name!r} opens in a viewer")
        layers = viewer.open_sample(PLUGIN, "nuclei")
        kinds = sorted(type(layer).__name__ for layer in layers)
        check(
            kinds == ["Image", "Labels"], "sample opens as an image and a labels layer", str(kinds)
        )
    finally:
        viewer.close()


def run_segment(model: str | None, outdir: Path) -> None:
    import numpy as np
    import tifffile

    from napari_unet.common.sample import load_sample, sample_paths

    image_path, _ = sample_paths()
    args = [
        str(Path(sys.executable).with_name("napari-unet")),
        "segment",
        str(image_path),
        "-o",
        str(outdir),
    ]
    if model is not None:
        args += ["--model", model]
    what = f"napari-unet segment on the sample with the {'built-in model' if model is None else 'tiny model'}"
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    ok = result.returncode == 0
    check(ok, what, "" if ok else f"exit {result.returncode}: {result.stderr.strip()[-500:]}")
    if not ok:
        return
    written = sorted(outdir.glob("*_labels.tif*"))
    check(len(written) == 1, "one labels file written", str(written))
    if len(written) != 1:
        return
    labels = tifffile.imread(written[0])
    image, truth = load_sample()
    check(labels.shape == image.shape, "labels have the image's shape", str(labels.shape))
    n_objects = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
    print(f"[info] {what}: {n_objects} objects (ground truth: {len(np.unique(truth)) - 1})")
    if model is None:
        check(n_objects >= (len(np.unique(truth)) - 1) // 2, "the built-in model finds the nuclei")


def check_segment(has_model: bool, workdir: Path) -> None:
    import torch

    from napari_unet import UNet, save_model

    torch.manual_seed(0)
    tiny = save_model(UNet(1, 3, depth=2, base_filters=4).eval(), workdir / "tiny.safetensors")
    run_segment(str(tiny), workdir / "out-tiny")
    if has_model:
        run_segment(None, workdir / "out-builtin")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True, help="pip freeze before the wheel")
    parser.add_argument("--after", type=Path, required=True, help="pip freeze after the wheel")
    parser.add_argument("--max-wheel-mb", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.mkdtemp()))
    args = parser.parse_args()

    has_model = check_wheel_contents(args.wheel, args.max_wheel_mb)
    check_versions_kept(args.before, args.after)
    check_installed_from_wheel()
    check_npe2_list()
    check_viewer()
    check_segment(has_model, args.workdir)
    print(f"[{'ok' if not failures else 'FAIL'}] {len(failures)} failed check(s) {failures or ''}")
    return len(failures)


if __name__ == "__main__":
    sys.exit(main())
