"""BioImage Model Zoo (bioimage.io) packages: export napari-unet models, run zoo packages.

* :func:`export_bioimageio` writes a model as a BioImage.IO model package (spec 0.5 zip),
  tested with ``bioimageio.core.test_model`` before it is written (:mod:`.export`).
* :func:`load_package` opens a local package (zip or folder with ``rdf.yaml``) without running
  any code shipped with it: a napari-unet package comes back as a :class:`~napari_unet.UNet`,
  any other package as a :class:`~.runner.ZooModel` that the segmentation pipeline runs with
  the package's own pre- and post-processing (:mod:`.package`, :mod:`.runner`). Every
  package is checked first, through one door (:mod:`.checked`): nothing outside it is read,
  nothing in it is trusted before its size, form and SHA-256 are.

Needs the optional extra ``napari-unet[bioimageio]``; nothing here is imported by
``import napari_unet``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ZooModel", "export_bioimageio", "is_package", "load_package"]

_LAZY = {
    "export_bioimageio": ".export",
    "is_package": ".package",
    "load_package": ".package",
    "ZooModel": ".runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
