"""The one checked reader of image files: TIFF, zarr / OME-Zarr, ``.npy`` and PNG, and folders.

Every command (segment, train, evaluate) reads through here, so a bad file gets the same clear
:class:`~napari_unet.common.errors.UserInputError` naming the file, whatever the library that
failed (tifffile, zarr, numpy), and a folder of images works everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserInputError, describe_os_error
from .validate import check_labels, check_not_empty

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "channel_names",
    "image_name",
    "is_zarr_store",
    "list_images",
    "read_image",
    "read_labels",
]

TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")
#: file types read as images, longest suffix first
#: colour or grey pictures, read with imageio (a third axis holds the colour samples)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
FILE_SUFFIXES = (*TIFF_SUFFIXES, ".npy", *PICTURE_SUFFIXES)
IMAGE_SUFFIXES = (*FILE_SUFFIXES, ".ome.zarr", ".zarr")
#: tifffile's axis letters that mean the same as ours (S: the samples of an RGB image)
_TIFF_AXES = {"S": "C"}
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def image_name(path: str | os.PathLike) -> str:
    """The file name without its image suffix: ``a.ome.tif`` -> ``a``, ``b.zarr`` -> ``b``."""
    path = Path(path)
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_tiff(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(TIFF_SUFFIXES)


def is_zarr_store(path: str | os.PathLike) -> bool:
    """A folder that holds a zarr array or group (v2 or v3 metadata)."""
    path = Path(path)
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def list_images(folder: str | os.PathLike, arg: str = "folder") -> list[Path]:
    """The image files and zarr stores in ``folder`` (not recursive), sorted by name.

    Raises
    ------
    UserInputError
        ``folder`` is missing, not a folder, unreadable or holds no image.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserInputError(f"{arg} {folder} not found")
    if not folder.is_dir():
        raise UserInputError(f"{arg} {folder} is a file, not a folder")
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise UserInputError(f"{arg} {folder}: {describe_os_error(err, with_path=False)}") from err
    found = [
        p
        for p in entries
        if not p.name.startswith(".")
        and (
            (p.is_file() and p.name.lower().endswith(FILE_SUFFIXES))
            or (p.name.lower().endswith(".zarr") and p.is_dir())
            or is_zarr_store(p)
        )
    ]
    if not found:
        raise UserInputError(
            f"{arg} {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}); check the folder"
        )
    return found


def expand_inputs(paths: list[str | os.PathLike], arg: str = "INPUT") -> list[Path]:
    """Files and zarr stores as given; a plain folder stands for the images it holds."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            if p.is_symlink():
                raise UserInputError(
                    f"input {p} ({arg}) is a symbolic link to nothing (broken, or a loop); "
                    "give the file it should point to"
                )
            raise UserInputError(f"input not found: {p} ({arg}); check the path")
        if not p.is_dir():
            check_regular_file(p)
        out.extend(list_images(p, arg) if p.is_dir() and not _looks_zarr(p) else [p])
    return out


def check_regular_file(path: Path) -> None:
    """Refuse what is not a readable file: a pipe, socket or device (reading one could wait
    for ever) or an empty file.

    Raises
    ------
    UserInputError
        Naming ``path`` and what it is.
    """
    import stat

    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        what = "a named pipe" if stat.S_ISFIFO(info.st_mode) else "a socket or device"
        raise UserInputError(f"{path} is {what}, not an image file; give an image file")
    if info.st_size == 0:
        raise UserInputError(f"{path} is empty (0 bytes): not an image; check the file")


def _looks_zarr(path: Path) -> bool:
    return is_zarr_store(path) or path.name.lower().endswith(".zarr")


def read_image(path: str | os.PathLike, *, lazy: bool = True) -> tuple[Any, str | None]:
    """An image and its axes if the file records them (``None`` otherwise).

    TIFF, ``.npy`` and PNG files are read into memory; zarr arrays and OME-Zarr groups (level 0
    of the first multiscale image) are opened as dask arrays (``lazy``) or read.

    Raises
    ------
    UserInputError
        Missing, unreadable, corrupt, empty or non-numeric, with the file named.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path} not found")
    if path.is_dir():
        if not _looks_zarr(path):
            raise UserInputError(
                f"{path} is a folder, not an image file or a zarr / OME-Zarr store"
            )
        image, axes = _read_zarr(path)
        if not lazy:
            image = np.asarray(image)
    else:
        check_regular_file(path)
        name = path.name.lower()
        if name.endswith(TIFF_SUFFIXES):
            image, axes = _read_tiff(path)
        elif name.endswith(".npy"):
            image, axes = _read_npy(path), None
        elif name.endswith(PICTURE_SUFFIXES):
            image = _read_picture(path)
            axes = "YXC" if image.ndim == 3 else None
        else:
            raise UserInputError(
                f"{path}: not an image file this reads ({', '.join(IMAGE_SUFFIXES)})"
            )
    _check_numeric(image, path)
    if image.ndim == 2:
        axes = "YX"
    return image, axes


def channel_names(path: str | os.PathLike) -> list[str] | None:
    """The channel names a file's metadata gives (OME-TIFF, ImageJ TIFF, OME-Zarr), or None.

    Never raises: a file without names (or with unreadable metadata) gives ``None``.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _zarr_channel_names(path)
        if is_tiff(path):
            return _tiff_channel_names(path)
    except Exception as err:  # metadata is a courtesy: a bad entry must not stop the run
        log.debug("no channel names from %s: %s", path, err)
    return None


def _tiff_channel_names(path: Path) -> list[str] | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            from xml.etree import ElementTree

            root = ElementTree.fromstring(tif.ome_metadata)
            pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels")), None)
            if pixels is not None:
                names = [c.get("Name") for c in pixels if c.tag.endswith("}Channel")]
                if names and all(names):
                    return [str(n) for n in names]
        meta = tif.imagej_metadata or {}
        labels = meta.get("Labels")
        channels = int(meta.get("channels", 0) or 0)
        if labels and channels and len(labels) >= channels:
            return [str(x) for x in labels[:channels]]
    return None


def _zarr_channel_names(path: Path) -> list[str] | None:
    import zarr

    attrs = dict(zarr.open(str(path), mode="r").attrs)
    omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
    names = [c.get("label") for c in omero.get("channels", [])]
    return [str(n) for n in names] if names and all(names) else None


def read_labels(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """A label image (in memory), checked: whole-number ids >= 0, not empty.

    Floating-point files holding whole numbers (some tools write labels as float) are read as
    int64.
    """
    path = Path(path)
    data = as_label_array(np.asarray(read_image(path, lazy=False)[0]))
    return check_labels(data, name or f"labels {path}")


def as_label_array(data: np.ndarray) -> np.ndarray:
    """Floating-point labels holding only whole numbers as int64; anything else unchanged."""
    if data.dtype.kind == "f" and np.all(np.isfinite(data)) and np.all(np.mod(data, 1) == 0):
        return data.astype(np.int64)
    return data


def _check_numeric(image: Any, path: Path) -> None:
    if image.dtype.kind not in "biuf":
        raise UserInputError(
            f"{path} holds {image.dtype} values, not numbers: not an image napari-unet can use"
        )
    check_not_empty(tuple(image.shape), str(path))


def _read_tiff(path: Path) -> tuple[np.ndarray, str | None]:
    import tifffile

    try:
        with _tifffile_warnings() as said, tifffile.TiffFile(path) as tif:
            tif.series  # noqa: B018 (parsed here: what tifffile says of the OME-XML)
            broken = [m for m in said if "OME series" in m]
            if not broken:
                image, axes = _first_series(tif, path)
        for message in said:
            if message not in broken:
                log.warning("%s: %s", path, message)
        if broken:  # OME-XML that does not fit the pages: tifffile zero-fills or drops them
            log.warning(
                "%s: its OME metadata does not fit its pages (%s); read as its pages are, "
                "without the OME axes (pass --axes to set them)",
                path,
                broken[0].split(". ")[0],
            )
            with tifffile.TiffFile(path, is_ome=False) as tif:
                image, axes = _first_series(tif, path)
    except OSError as err:
        raise UserInputError(f"{path}: {describe_os_error(err, with_path=False)}") from err
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, TypeError) as err:
        raise UserInputError(
            f"{path}: not a readable TIFF file (corrupt or truncated?): {_first_line(err)}"
        ) from err
    known = set(axes) <= set("TCZYX") and len(set(axes)) == len(axes) == image.ndim
    return image, axes if known else None


def _first_series(tif, path: Path) -> tuple[np.ndarray, str]:
    """The first image series of an open TIFF and its axes (others are left out, and said)."""
    series = tif.series[0]
    if len(tif.series) > 1:  # pages of other shapes (a thumbnail, a second image)
        others = ", ".join(str(tuple(s.shape)) for s in tif.series[1:4])
        log.warning(
            "%s holds %d images of different shapes; reading the first, %s, and "
            "leaving out %s%s (save them as separate files to segment them)",
            path, len(tif.series), tuple(series.shape), others,
            ", ..." if len(tif.series) > 4 else "",
        )  # fmt: skip
    image, axes = series.asarray(), series.axes.upper()
    if "S" in axes and not axes.endswith("S") and _is_rgb(series):
        # an RGB TIFF stored plane by plane (planar configuration 2, as some scanners and
        # OME-TIFF writers save it): its colour samples go last, as in any colour picture,
        # so that it is read as colour and not as three channels
        image = np.moveaxis(image, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    return image, "".join(_TIFF_AXES.get(a, a) for a in axes)


def _is_rgb(series) -> bool:
    """The series' pages are photometric RGB (their samples are colour, not channels)."""
    import tifffile

    return series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB


@contextlib.contextmanager
def _tifffile_warnings():
    """The warnings tifffile logs meanwhile, as a list of messages, kept off the console."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage().split("> ", 1)[-1])

    logger = logging.getLogger("tifffile")
    handler, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except OSError as err:
        raise UserInputError(f"{path}: {describe_os_error(err, with_path=False)}") from err
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise UserInputError(
                f"{path} holds Python objects, not numbers; napari-unet reads numeric .npy "
                "files only (pickled data could run code)"
            ) from err
        raise UserInputError(f"{path}: not a readable .npy file: {_first_line(err)}") from err
    except (EOFError, TypeError) as err:
        raise UserInputError(f"{path}: not a readable .npy file (truncated?)") from err


def _read_picture(path: Path) -> np.ndarray:
    from skimage.io import imread

    try:
        cmyk = _cmyk_as_rgb(path)
        return cmyk if cmyk is not None else np.asarray(imread(path))
    except OSError as err:
        raise UserInputError(f"{path}: {describe_os_error(err, with_path=False)}") from err
    except Exception as err:  # imageio/PIL raise many types for a bad file
        kind = path.suffix.lstrip(".").upper()
        raise UserInputError(f"{path}: not a readable {kind} file: {_first_line(err)}") from err


def _cmyk_as_rgb(path: Path) -> np.ndarray | None:
    """A CMYK picture (some JPEGs) converted to RGB by Pillow, else ``None``: read as it is,
    its four ink channels would pass for RGBA, the image in the (inverted) black ink lost."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if picture.mode != "CMYK":
                return None
            log.info("%s: CMYK picture converted to RGB", path)
            return np.asarray(picture.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):  # the usual reader says what is wrong
        return None


def _read_zarr(path: Path) -> tuple[Any, str | None]:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for a bad store
        raise UserInputError(
            f"{path}: not a readable zarr / OME-Zarr store: {_first_line(err)}"
        ) from err
    if isinstance(node, zarr.Array):
        return da.from_zarr(node), None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise UserInputError(
            f"{path}: a zarr group without OME-Zarr 'multiscales' metadata; give the path of "
            "the array inside it"
        )
    try:
        first = multiscales[0]
        array = da.from_zarr(node[first["datasets"][0]["path"]])
        names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    except Exception as err:  # malformed metadata or a missing level
        raise UserInputError(
            f"{path}: broken OME-Zarr metadata (level 0 cannot be opened): {_first_line(err)}"
        ) from err
    axes = "".join(str(n).upper() for n in names) or None
    if axes is not None and (len(axes) != array.ndim or not set(axes) <= set("TCZYX")):
        log.warning(
            "%s: its OME-Zarr axes %s do not fit its level-0 array of shape %s (one of T, C, "
            "Z, Y, X per axis): they are ignored; pass --axes (axes= in Python) to set them",
            path,
            names,
            tuple(array.shape),
        )
        axes = None
    return array, axes


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
