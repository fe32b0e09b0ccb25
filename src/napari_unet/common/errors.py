"""Exceptions raised for user errors.

Everything a user can get wrong (a bad argument, a bad file, a model that does not fit the
image) raises :class:`UserInputError` or a subclass. The CLI turns these into one line and exit
code 2; the widgets show them as napari notifications. Anything else is a bug.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""


class ModelFileError(UserInputError):
    """A model file that cannot be read: truncated, not a model, or from a newer version."""


class ShapeError(UserInputError):
    """An array whose shape the network or the function cannot take."""
