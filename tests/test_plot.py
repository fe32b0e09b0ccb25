"""The Train dock's live plot draws less often when drawing is slow (it must not slow training)."""

from __future__ import annotations


def test_redraws_are_spaced_by_the_cost_of_a_draw(qtbot):
    from napari_unet._napari.train._plot import TrainingPlot

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


def test_the_train_dock_plot_takes_napari_theme_colours_and_follows_a_change(
    make_napari_viewer, qtbot
):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer()
    viewer.theme = "dark"
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Train")
    plot = widget.plot

    def colours():
        ax = plot.ax_loss
        return {
            "figure": to_hex(plot.figure.get_facecolor()),
            "axes": to_hex(ax.get_facecolor()),
            "label": to_hex(ax.yaxis.label.get_color()),
            "tick": to_hex(ax.get_yticklabels()[0].get_color()),
            "spine": to_hex(ax.spines["left"].get_edgecolor()),
            "legend text": to_hex(ax.get_legend().get_texts()[0].get_color()),
            "train line": to_hex(plot._lines["train"].get_color()),
        }

    for theme_id in ("dark", "light", "dark"):
        viewer.theme = theme_id
        theme = get_theme(theme_id)
        background, text = theme.background.as_hex(), theme.text.as_hex()
        now = colours()
        assert now["figure"] == now["axes"] == to_hex(background), theme_id
        assert now["label"] == now["tick"] == now["spine"] == now["legend text"] == to_hex(text)
        # lines stand out on the background: lighter than it on dark, darker on light
        luminance = {k: sum(int(now[k][i : i + 2], 16) for i in (1, 3, 5)) for k in now}
        if theme.type == "dark":
            assert luminance["train line"] > luminance["figure"] + 200
        else:
            assert luminance["train line"] < luminance["figure"] - 200
