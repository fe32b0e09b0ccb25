"""What runs the network on a batch of tiles: torch, OpenVINO, ONNX Runtime, OpenVINO int8.

:mod:`.engines` picks and builds the runner (``auto``, the ONNX export cache, verification),
:mod:`.interrupt` lets a stop event end the batch in flight (Cancel), and :mod:`.quantize`
makes the int8 copy calibrated on the bundled sample.
"""
