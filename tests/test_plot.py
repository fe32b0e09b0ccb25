"""The Train dock's live plot draws less often when drawing is slow (it must not slow training)."""

from __future__ import annotations


def test_redraws_are_spaced_by_the_cost_of_a_draw(qtbot):
    from napari_unet._napari._plot import TrainingPlot

    plot = TrainingPlot(min_interval=0.5)
    qtbot.addWidget(plot.widget)
    plot.add_batch(0, 0, 10, 1.0)
    assert plot.redraw(force=True)
    assert not plot.redraw()  # just drew: throttled
    qtbot.waitUntil(lambda: plot._draw_seconds > 0)  # the deferred draw ran and was timed
    assert plot.interval >= 0.5
    plot._draw_seconds = 0.2  # a slow machine: a draw took 0.2 s
    assert plot.interval == 0.2 * TrainingPlot.COST_FACTOR  # drawing <= 1/20 of the time
    plot._draw_seconds = 0.001  # a fast one: the minimum interval
    assert plot.interval == 0.5
    plot._last_draw -= 1.0  # a second later
    assert plot.redraw()
    assert list(plot._lines["batch"].get_xdata()) == [0.1]
