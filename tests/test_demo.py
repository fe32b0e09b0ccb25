"""``napari-unet demo`` (the quick start): clean progress on stderr, a short summary beside the
README's figures on stdout (issue 30)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_unet.cli import main
from napari_unet.cli.demo import README_DSB, README_SAMPLE, TOLERANCE, summary
from napari_unet.common.progress import run_with_progress

README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass
class Event:
    stage: str
    done: int
    total: int


def test_the_reference_figures_are_the_readmes():
    text = README.read_text(encoding="utf-8")
    sample = (
        f"it finds {README_SAMPLE['n_pred']} of 129 nuclei, pixel Dice "
        f"{README_SAMPLE['pixel_dice']:.3f}, AP@0.5 {README_SAMPLE['ap@0.50']:.3f}"
    )
    assert sample in " ".join(text.split())
    quality = next(line for line in text.splitlines() if "**napari-unet built-in model**" in line)
    cells = [cell.strip(" *") for cell in quality.split("|")]
    assert f"{README_DSB['pixel_dice']:.3f}" == cells[2]
    assert f"{README_DSB['ap@0.50']:.3f}" == cells[5]
    assert f"{README_DSB['ap']:.3f}" == cells[7]


def test_summary_puts_the_scores_beside_the_readmes_and_flags_a_gap():
    record = {"n_pred": 113, "pixel_dice": 0.8641, "ap@0.50": 0.741, "ap": 0.333}
    text = summary(record, 129)
    lines = text.splitlines()
    assert len(lines) == 6  # header, four scores, what good looks like
    assert re.search(r"nuclei found \(of 129\)\s+113\s+113$", lines[1])
    assert re.search(r"AP@0\.5\s+0\.741\s+0\.741$", lines[3])
    assert re.search(r"mean AP 0\.5:0\.95\s+0\.333\s+-$", lines[4])
    assert lines[5].startswith("good:") and "0.800" in lines[5]
    assert "differs" not in text
    worse = summary({**record, "ap@0.50": 0.741 - 2 * TOLERANCE}, 129)
    assert re.search(r"AP@0\.5\s+0\.701\s+0\.741\s+differs$", worse.splitlines()[3])
    assert worse.splitlines()[5].startswith("NOT as expected: AP@0.5 more than 0.02")
    assert "good" not in worse.splitlines()[5]
    other = summary({**record, "pixel_dice": 0.0, "ap@0.50": 0.0}, 129, builtin=False)
    assert other.splitlines()[5].startswith("another model") and "good" not in other


def test_progress_is_one_bar_counting_up_per_stage(capsys):
    log = logging.getLogger("napari_unet.test_demo")

    def job():
        for done, total in [(0, 1), (1, 1), (0, 3), (3, 3), (0, 1), (1, 1), (1, 3), (3, 3)]:
            yield Event("measuring objects", done, total)
        log.warning("objects measure ~23 px")
        yield Event("predict", 0, 2)
        yield Event("predict", 2, 2)
        yield Event("done", 1, 1)
        return "labels"

    handler = logging.StreamHandler()  # what the CLI's logging.basicConfig sets up
    logging.getLogger().addHandler(handler)
    try:
        assert run_with_progress(job(), True) == "labels"
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert "0step [" not in err  # tqdm's bar of no stage yet: "0step [00:00, ?step/s]"
    assert "done:" not in err  # the last event is the result, not a step
    counts = [(int(d), int(t)) for d, t in re.findall(r"measuring objects:.*?\| (\d+)/(\d+) ", err)]
    assert counts[-1] == (8, 8)  # 1 + 3 + 1 + 3 steps, counted over the passes
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    assert "objects measure ~23 px" in err


@pytest.mark.parametrize("flags", [[], ["--all"]])
def test_demo_prints_a_short_summary(capsys, flags):
    assert main(["demo", *flags]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("segmented in") and "built-in nuclei model" in lines[0]
    assert "README" in lines[1]
    found = re.search(r"nuclei found \(of 129\)\s+(\d+)\s+113", out)
    assert found and abs(int(found.group(1)) - 113) <= 3
    assert next(line for line in lines if line.startswith("good:"))
    assert "differs" not in out  # the same scores as the README's, within the tolerance
    assert ("pixel_precision" in out) == ("--all" in flags)  # the full table only on request
    assert "sample: DSB 2018" in err and "0step [" not in err
