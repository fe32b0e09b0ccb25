"""Labels from class probabilities, and the table of their objects.

:mod:`.postprocess` turns probabilities into semantic or instance labels (seeded watershed,
in memory or chunk by chunk for zarr), :mod:`.hmaxima` finds the seeds' h-maxima (skimage's,
sorting only the objects' values), and :mod:`.objects` makes the per-object table (area, centroid, mean intensity,
confidence) and its CSV.
"""
