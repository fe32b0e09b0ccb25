"""The Qt-free engine: model, tiling and inference, post-processing, training, metrics, files.

Nothing here imports napari, qtpy, magicgui or superqt (an import-linter contract checks it);
the widgets, the CLI and the tests all call into this package.
"""
