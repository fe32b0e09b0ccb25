"""The anisotropy (z step / XY pixel size) a TIFF or OME-Zarr image records, if any.

ImageJ hyperstacks record the z step as ``spacing`` and the pixel size as the X resolution;
OME-TIFF as ``PhysicalSizeZ`` / ``PhysicalSizeX``; OME-Zarr as the ``scale`` of its first
dataset. Anything missing or unreadable gives ``None`` (the caller falls back to 1).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["anisotropy_of"]


def anisotropy_of(path: Path) -> float | None:
    """Z step / X pixel size recorded in ``path`` (TIFF or OME-Zarr), or ``None``."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            ratio = _tiff(path)
        elif path.is_dir():
            ratio = _ome_zarr(path)
        else:
            ratio = None
    except (OSError, ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as err:
        log.warning(
            "%s: its voxel size could not be read (%s); anisotropy 1 unless given", path, err
        )
        return None
    if ratio is None:
        return None
    if not math.isfinite(ratio) or ratio <= 0:  # said, not silently dropped
        log.warning(
            "%s: its voxel size gives an anisotropy of %s, which is not a positive number; "
            "using 1 (pass the real value with --anisotropy F)", path, ratio
        )  # fmt: skip
        return None
    return float(ratio)


def _tiff(path: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            z = re.search(r'PhysicalSizeZ="([0-9.eE+-]+)"', tif.ome_metadata)
            x = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
            if z and x:
                return float(z.group(1)) / float(x.group(1))
        meta = tif.imagej_metadata or {}
        if "spacing" in meta:
            tag = tif.pages[0].tags.get("XResolution")
            if tag is None:
                return None
            num, den = tag.value
            return float(meta["spacing"]) * num / den  # spacing / (den / num)
    return None


def _ome_zarr(path: Path) -> float | None:
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    first = multiscales[0]
    names = [str(a["name"] if isinstance(a, dict) else a).upper() for a in first["axes"]]
    for transform in first["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale" and "Z" in names and "X" in names:
            scale = transform["scale"]
            return float(scale[names.index("Z")]) / float(scale[names.index("X")])
    return None
