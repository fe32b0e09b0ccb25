"""Saving a model trained in napari to a file, asking before an existing file is replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_trained(
    model: Any, path: str | Path, confirm_overwrite: Callable[[Path], bool]
) -> tuple[Path | None, str]:
    """Save ``model`` to ``path`` (``.safetensors`` is appended when missing).

    Returns
    -------
    written : Path or None
        The file written, or None when nothing was saved.
    message : str
        What happened, for the user (why not, when nothing was saved).
    """
    from ...common.errors import UserInputError
    from ...model.files import save_model

    path = Path(path).expanduser()
    if str(path) in ("", ".") or path.is_dir():
        return None, "choose a model file to save to (…/name.safetensors)"
    if not path.name.endswith(".safetensors"):
        path = path.with_name(path.name + ".safetensors")
    if path.exists() and not confirm_overwrite(path):
        return None, f"not saved: {path} exists"
    try:
        written = save_model(model, path)
    except (UserInputError, OSError) as err:
        return None, f"could not save {path}: {err}"
    return written, f"saved {written}"


def ask_overwrite(path: Path) -> bool:
    """Ask the user (a dialog) whether to replace the file ``path``."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        None,
        "Replace model file?",
        f"{path} already exists. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
