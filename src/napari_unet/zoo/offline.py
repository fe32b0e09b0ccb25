"""Run ``bioimageio`` without network access: no remote checks, no downloads.

``bioimageio.spec`` checks remote files (HEAD requests, downloads) while validating when its
``perform_io_checks`` setting is on. Local packages need none of that: hashes of the files
inside a package are checked from the files themselves.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from ..common.errors import UserInputError


def require_bioimageio() -> None:
    """Raise a :class:`UserInputError` that says how to install the optional extra."""
    if importlib.util.find_spec("bioimageio") is None or (
        importlib.util.find_spec("bioimageio.core") is None
    ):
        raise UserInputError(
            "BioImage.IO packages need the optional extra: pip install 'napari-unet[bioimageio]'"
        )


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Switch off ``bioimageio.spec``'s remote I/O checks for the duration of the block."""
    require_bioimageio()
    from bioimageio.spec._internal._settings import settings

    before = settings.perform_io_checks
    settings.perform_io_checks = False
    try:
        yield
    finally:
        settings.perform_io_checks = before
