"""The U-Net Evaluate dock: a prediction and a ground-truth Labels layer in, scores out.

:mod:`.evaluate_widget` is the dock (the manifest's ``EvaluateWidget``) and puts the error
layer, :mod:`._evaluate_job` is its worker job, and :mod:`._metrics_table` its words and
colours (metric table, AP thresholds, error-layer legend).
"""
