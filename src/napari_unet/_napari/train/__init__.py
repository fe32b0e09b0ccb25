"""The U-Net Train dock: layer pairs in, a trained model out, watched as it learns.

:mod:`.train_widget` is the dock (the manifest's ``TrainWidget``); :mod:`._layer_pairs` is its
list of (image, labels[, region]) rows and :mod:`._train_inputs` turns them into arrays;
:mod:`._train_settings` and :mod:`._network_summary` hold the network and hyper-parameter
settings and their checks; :mod:`._train_job` is the worker job, :mod:`._train_monitor`,
:mod:`._plot` and :mod:`._preview` show a run as it goes, and :mod:`._model_save` saves its
model. Correct and retrain (in the Segment dock) runs the same job and monitor.
"""
