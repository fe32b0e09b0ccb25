"""Layers <-> arrays: the data, axes and world placement a computation needs, and back.

Workers get arrays, never layers; these helpers run on the GUI thread before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..inference.images.axes import guess_axes, parse_axes

if TYPE_CHECKING:
    import napari


@dataclass(frozen=True)
class Placement:
    """Where a layer's spatial axes sit in the world: per-axis scale, translate, labels, units."""

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axis_labels: tuple[str, ...]
    units: tuple[Any, ...] | None

    def kwargs(self, leading: int = 0) -> dict[str, Any]:
        """Layer keyword arguments; ``leading`` extra axes (e.g. classes) get scale 1."""
        pad = (1.0,) * leading
        out: dict[str, Any] = {
            "scale": pad + self.scale,
            "translate": (0.0,) * leading + self.translate,
            "axis_labels": tuple(f"class{'' if i == 0 else i}" for i in range(leading))
            + self.axis_labels,
        }
        if self.units is not None:
            out["units"] = ("pixel",) * leading + self.units
        return out


def layer_array(layer: napari.layers.Image) -> Any:
    """The layer's data as one array (level 0 of a multiscale layer), numpy or dask."""
    return layer.data[0] if layer.multiscale else layer.data


@dataclass(frozen=True)
class AxesProposal:
    """The axes proposed for a layer, where they come from, and why there are none.

    Attributes
    ----------
    axes : str
        One letter per axis of the layer's data (``""`` when they cannot be told).
    source : str
        ``"layer"`` (its axis labels, its rgb flag, or a plain YX image) or ``"guessed"``
        (from the shape alone), as ``segment_iter``'s ``axes_source`` takes it.
    problem : str
        Why no axes are proposed (``""`` when they are), in words for the dock.
    """

    axes: str
    source: str = "layer"
    problem: str = ""


def propose_axes(layer: napari.layers.Image, viewer: napari.viewer.Viewer | None = None) -> str:
    """Axes for ``layer``'s data from its rgb flag, its shape and the axis labels."""
    return axes_proposal(layer, viewer).axes


def axes_proposal(
    layer: napari.layers.Image, viewer: napari.viewer.Viewer | None = None
) -> AxesProposal:
    """:func:`propose_axes` with where the axes come from, or why there are none.

    A short unlabelled leading axis (channels or Z slices?) gives no axes and a
    ``problem`` that says to type them, with examples.
    """
    from ..inference.images.axes import AmbiguousAxesError

    data = layer_array(layer)
    rgb = bool(layer.rgb)
    labels = tuple(getattr(layer, "axis_labels", ()) or ())
    if viewer is not None and not _letters_only(labels):
        labels = tuple(viewer.dims.axis_labels)[-layer.ndim :]
    try:
        axes = guess_axes(data.shape, rgb=rgb, axis_labels=labels)
    except AmbiguousAxesError:
        return AxesProposal("", "", _ambiguous(data.shape))
    except ValueError as err:
        return AxesProposal("", "", f"{err}; type one letter per axis from TCZYX in Axes")
    spatial = data.ndim - (1 if rgb else 0)
    told = spatial <= 2 or _axis_letters(labels, spatial)
    return AxesProposal(axes, "layer" if told else "guessed")


def _ambiguous(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        first = f"the first axis ({shape[0]}) of shape {tuple(shape)} holds"
        examples = "CYX for channels, ZYX for a z-stack, TYX for a time series"
    else:
        first = f"the first axes of shape {tuple(shape)} hold"
        examples = "CZYX, TCYX or TZYX"
    return (
        f"cannot tell whether {first} channels, Z slices or time points: type the axes "
        f"in Axes (Advanced), e.g. {examples}"
    )


def _letters_only(labels: tuple[str, ...]) -> bool:
    return bool(labels) and all(len(str(a)) == 1 and str(a).isalpha() for a in labels)


def _axis_letters(labels: tuple[str, ...], n: int) -> bool:
    """Whether the last ``n`` labels name the axes (distinct letters of TCZYX, Y and X)."""
    letters = [str(a).strip().upper() for a in labels[-n:]] if len(labels) >= n else []
    return (
        bool(letters)
        and all(len(a) == 1 and a in "TCZYX" for a in letters)
        and len(set(letters)) == n
        and {"Y", "X"} <= set(letters)
    )


def channel_count(shape: tuple[int, ...], axes: str) -> int:
    """Channels a channel picker offers: the C axis's length, 0 for colour or no C axis."""
    from ..inference.images.axes import is_colour

    if "C" not in axes or len(axes) != len(shape) or is_colour(axes, shape):
        return 0
    return int(shape[axes.index("C")])


def channel_names(layer: napari.layers.Image, n: int) -> list[str] | None:
    """The layer's ``metadata["channel_names"]`` when it names ``n`` channels, else None."""
    names = (getattr(layer, "metadata", None) or {}).get("channel_names")
    if names is None or isinstance(names, str):
        return None
    names = [str(name) for name in names]
    return names if len(names) == n and n > 0 else None


def output_placement(layer: napari.layers.Image, axes: str) -> Placement:
    """The placement of the labels of ``layer`` (data axes ``axes``): its own, minus ``C``.

    An RGB layer's colour axis is not a layer dimension; another ``C`` axis is, and is dropped.
    """
    axes = parse_axes(axes, layer_array(layer).ndim)
    dims = axes[:-1] if layer.rgb and axes.endswith("C") else axes
    if len(dims) != layer.ndim:  # axes that do not describe this layer: keep the trailing dims
        dims = dims[-layer.ndim :]
    keep = [i for i, a in enumerate(dims) if a != "C"]
    units = getattr(layer, "units", None)
    return Placement(
        scale=tuple(float(layer.scale[i]) for i in keep),
        translate=tuple(float(layer.translate[i]) for i in keep),
        axis_labels=tuple(str(layer.axis_labels[i]) for i in keep),
        units=tuple(units[i] for i in keep) if units is not None else None,
    )


def upsert_layer(
    viewer: napari.viewer.Viewer, kind: str, name: str, data: Any, placement: Placement, **kwargs
) -> napari.layers.Layer:
    """Update the layer called ``name`` of type ``kind`` with ``data``, or add it.

    Re-running a computation therefore updates its previous result in place - the same layer,
    at the same position in the layer list, with the user's opacity, contour and colormap -
    instead of stacking copies. A layer of that name but of another type or dimensionality is
    replaced by a new one at its position. ``viewer`` may be the proxy napari hands plugins.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    kind : {"labels", "image"}
    name : str
    data : array-like
    placement : Placement
        Scale, translate, axis labels and units of ``data``'s axes.
    **kwargs
        Passed to ``viewer.add_<kind>`` when a layer is added; ``leading=n`` gives ``n``
        leading axes (e.g. classes) a scale of 1.
    """
    import napari

    leading = kwargs.pop("leading", 0)
    existing = viewer.layers[name] if name in viewer.layers else None
    place = placement.kwargs(leading)
    cls = getattr(napari.layers, kind.capitalize())
    if existing is not None and isinstance(existing, cls) and existing.ndim == data.ndim:
        existing.data = data
        for key, value in place.items():
            setattr(existing, key, value)
        return existing
    index = None
    if existing is not None:
        index = layer_index(viewer, existing)
        viewer.layers.remove(existing)
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **place, **kwargs)
    if index is not None:
        viewer.layers.move(layer_index(viewer, layer), index)
    return layer


def layer_index(viewer: napari.viewer.Viewer, layer: Any) -> int:
    """Position of ``layer`` in the layer list (proxies of the same layer match)."""
    ids = [ly.unique_id for ly in viewer.layers]
    return ids.index(layer.unique_id)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer (``is`` fails for napari's plugin proxies)."""
    if a is None or b is None:
        return a is b
    return a.unique_id == b.unique_id
