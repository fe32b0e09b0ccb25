"""What the network trains on: the (image, labels[, region]) pairs and their batches.

:mod:`.pairs` reads and prepares the pairs (normalised image, valid mask) from arrays or
folders and samples patches, :mod:`.targets` makes the class targets and border weights,
:mod:`.working_size` resamples every pair to the model's working object size, and
:mod:`.batches` draws the seeded, augmented batches (in background workers if asked).
"""
