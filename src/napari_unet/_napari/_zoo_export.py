"""Exporting a model trained in napari as a BioImage.IO package, in a thread worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def package_path(path: str | Path) -> Path | None:
    """The ``.zip`` beside a model file path (``name.safetensors`` -> ``name.zip``)."""
    path = Path(path).expanduser()
    if str(path) in ("", ".") or path.is_dir():
        return None
    return path.with_suffix(".zip") if path.suffix != ".zip" else path


def start_export(model: Any, path: str | Path, report: Callable[[str, bool], None]) -> Any:
    """Export ``model`` to ``path`` (a ``.zip``) in a thread; ``report(message, is_error)``.

    Returns the started worker, or None when ``path`` is not usable (reported).
    The export tests the package with ``bioimageio.core.test_model`` (tens of seconds).
    """
    from napari.qt.threading import create_worker

    from ..zoo.export import export_bioimageio

    target = package_path(path)
    if target is None:
        report("choose a file name first (…/name.safetensors or name.zip)", True)
        return None
    worker = create_worker(export_bioimageio, model, target, _start_thread=False)
    worker.returned.connect(
        lambda written: report(f"exported BioImage.IO package {written}", False)
    )
    worker.errored.connect(lambda err: report(f"export failed: {err}", True))
    report(f"exporting {target} (testing the package with bioimageio.core)...", False)
    worker.start()
    return worker
