"""Telling the user what went wrong: a widget's status label plus a napari notification."""

from __future__ import annotations

from typing import Any


def report_error(status: Any, text: str, title: str = "") -> None:
    """Show ``text`` in the ``status`` label and as a napari error notification.

    Parameters
    ----------
    status : magicgui.widgets.Label
        The widget's status line; it reads ``"error: <text>"``.
    text : str
        What went wrong and how to fix it.
    title : str
        Prefix of the notification, e.g. ``"U-Net Segment"``.
    """
    from napari.utils.notifications import show_error

    status.value = f"error: {text}"
    show_error(f"{title}: {text}" if title else text)
