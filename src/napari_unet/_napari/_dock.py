"""The layout every U-Net dock shares: it scrolls, wraps its text, and hides the expert settings.

A laptop screen (1366x768) leaves about 600 px of height for a dock next to napari's layer
list, so each dock puts the few settings a biologist needs first and everything else in a
collapsed *Advanced* section; the whole dock scrolls when it is still taller than the window,
and status lines wrap instead of widening the dock.

Several U-Net docks open together share that height as tabs: a dock that opens next to another
U-Net dock is tabified with it and raised (:func:`tabify_with_siblings`), so each keeps the
whole height instead of three docks of ~90 px that show only their first rows.

Adding a setting to a dock's Advanced section (the way the other features do it)::

    self.advanced.add(SpinBox(label="Batch size", value=8, tooltip="..."))

Examples
--------
>>> class MyDock(Dock):  # doctest: +SKIP
...     def __init__(self, viewer):
...         super().__init__()
...         self.advanced = Advanced()
...         self.status = wrapping_label()
...         self.extend([Container(widgets=[ComboBox(label="Image")]), self.advanced,
...                      self.status])
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label, PushButton
from magicgui.widgets.bases import Widget

#: the tallest a dock may ask to be (its minimum size hint), so it fits a 1366x768 screen
MAX_DOCK_HEIGHT = 700
#: the Qt property that marks the scroll area of a U-Net dock (for tabifying with siblings)
DOCK_PROPERTY = "napari_unet_dock"

_CLOSED, _OPEN = "\u25b6 Advanced", "\u25bc Advanced"


class Dock(Container):
    """An unlabelled magicgui Container that napari docks inside a vertical scroll area.

    Put labelled settings in a ``Container(widgets=[...])`` of their own; buttons, status
    lines and the :class:`Advanced` section then span the dock's width.

    napari puts ``widget.native`` into its dock; for a scrollable Container that is the inner
    widget, which would leave the scroll area behind, so :attr:`native` is the scroll area here.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, labels=False, **kwargs)
        from qtpy.QtWidgets import QFrame

        self.root_native_widget.setFrameShape(QFrame.Shape.NoFrame)
        self.root_native_widget.setProperty(DOCK_PROPERTY, True)
        self.inner.layout().addStretch(1)  # rows stay at the top of a tall dock
        # napari adds the dock to its window after making the widget and shows it in a later
        # turn of the event loop: the first Show is the first moment the dock is in place
        on_event(self.root_native_widget, "Show", tabify_with_siblings, once=True)

    def finish_layout(self) -> None:
        """Call once the widgets are in: combo boxes shrink to short names, width is refit.

        The width is refit whenever the rows change later too (a table filled, a row shown):
        the scroll area never scrolls sideways, so a dock narrower than its rows would cut
        them off on the right.
        """
        compact_combos(self.inner)
        self.fit_width()
        if not getattr(self, "_fits_width", False):
            on_event(self.inner, "LayoutRequest", lambda _: self.fit_width())
            self._fits_width = True

    def fit_width(self) -> None:
        """Make the dock at least as wide as its rows need (plus the vertical scroll bar)."""
        bar = self.root_native_widget.verticalScrollBar().sizeHint().width()
        self.root_native_widget.setMinimumWidth(self.inner.minimumSizeHint().width() + bar + 4)

    @property
    def native(self) -> Any:
        """The scroll area holding the dock's widgets (what napari puts in its dock)."""
        return self.root_native_widget

    @property
    def inner(self) -> Any:
        """The QWidget inside the scroll area, with the dock's layout."""
        return self._widget._mgui_get_native_widget()


def on_event(widget: Any, kind: str, callback: Any, *, once: bool = False) -> Any:
    """Call ``callback(widget)`` when the QWidget ``widget`` gets a Qt event of type ``kind``
    (e.g. ``"Show"``, ``"LayoutRequest"``); with ``once``, only the first time.

    Returns the event filter (a QObject child of ``widget``: it goes when ``widget`` goes).
    """
    from qtpy.QtCore import QEvent, QObject

    wanted = getattr(QEvent.Type, kind)

    class _Hook(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            if event.type() == wanted:
                if once:
                    obj.removeEventFilter(self)
                callback(obj)
            return False

    hook = _Hook(widget)
    widget.installEventFilter(hook)
    return hook


def tabify_with_siblings(widget: Any) -> bool:
    """Put the dock holding the QWidget ``widget`` in a tab with the other open U-Net docks.

    Only docks on the same side of napari's window, not floating, holding a U-Net dock
    (:data:`DOCK_PROPERTY`) count; other plugins' docks are left where napari put them. The
    dock is raised (its tab chosen). Returns whether it was tabified.
    """
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window = dock.parentWidget() if dock is not None else None
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    siblings = [
        other
        for other in window.findChildren(QDockWidget)
        if other is not dock
        and not other.isHidden()
        and not other.isFloating()
        and window.dockWidgetArea(other) == area
        and other.widget() is not None
        and other.widget().property(DOCK_PROPERTY)
    ]
    if not siblings or any(other in window.tabifiedDockWidgets(dock) for other in siblings):
        return False
    window.tabifyDockWidget(siblings[-1], dock)
    dock.show()
    dock.raise_()
    return True


class Advanced(Container):
    """A collapsed section titled *Advanced*: a toggle button over a labelled list of rows.

    Add rows with :meth:`add`; they are hidden until the user opens the section.

    Parameters
    ----------
    expanded : bool
        Whether the section starts open.
    """

    def __init__(self, *, expanded: bool = False) -> None:
        self.toggle = PushButton(text=_CLOSED, tooltip="show or hide the expert settings")
        self.toggle.native.setFlat(True)
        self.toggle.native.setStyleSheet("text-align: left; font-weight: bold;")
        self.rows = Container(labels=True)
        self.rows.margins = (12, 0, 0, 0)
        super().__init__(labels=False, widgets=[self.toggle, self.rows])
        self.margins = (0, 0, 0, 0)
        self.toggle.changed.connect(lambda *_: self.set_expanded(not self.expanded))
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        """Whether the rows are shown."""
        return not self.rows.native.isHidden()

    def set_expanded(self, expanded: bool) -> None:
        """Show (``True``) or hide the rows."""
        self.rows.native.setHidden(not expanded)
        self.toggle.text = _OPEN if expanded else _CLOSED

    def add(self, *widgets: Widget) -> None:
        """Append ``widgets`` as rows (a widget's ``label`` is shown on its left)."""
        self.rows.extend(widgets)


def wrapping_label(value: str = "", **kwargs: Any) -> Label:
    """A Label whose text wraps at the dock's width instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value, **kwargs)
    native = label.native
    native.setWordWrap(True)
    native.setMinimumWidth(1)
    policy = native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    # not Fixed (magicgui's): a fixed height is the text's height at the 1 px minimum width,
    # one word a line, which made the dock scroll over hundreds of empty pixels; the layout
    # gives the label its height for the dock's width (height-for-width)
    policy.setVerticalPolicy(QSizePolicy.Policy.Preferred)
    native.setSizePolicy(policy)
    from qtpy.QtCore import Qt

    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def compact_combos(widget: Any, chars: int = 8) -> None:
    """Let the combo boxes under the QWidget ``widget`` shrink to ``chars`` characters.

    By default a combo box is as wide as its longest layer name, which widens the dock.
    """
    from qtpy.QtWidgets import QComboBox

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)


def header(text: str) -> Label:
    """A bold section title."""
    return Label(value=f"<b>{text}</b>")
