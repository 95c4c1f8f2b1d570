"""`stdiff evaluate` end to end on the tiny preset: report files, fractional times, resume."""
from __future__ import annotations

import json

import pytest

from stdiff.cli import main

ARGS = ["--checkpoint", "tiny", "--num-videos", "2", "--batch-size", "1", "--samples", "2",
        "--sampler", "ddim", "--steps", "2", "--num-frames", "4", "--fps", "2", "--no-progress"]


def test_evaluate_writes_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", *ARGS, "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_videos"] == 2 and report["num_samples"] == 2
    assert report["times"] == [4.0, 5.0]  # the fractional times 3.5, 4.5 have no ground truth
    assert report["uses_ground_truth"] is False
    assert (out / "metrics.csv").stat().st_size > 0 and (out / "metrics.png").stat().st_size > 0
    state = json.loads((out / "state.json").read_text())
    assert len(state["batches_done"]) == 2
    before = (out / "metrics.json").read_text()
    assert main(["evaluate", *ARGS, "--out", str(out)]) == 0  # all batches done: nothing recomputed
    assert (out / "metrics.json").read_text() == before


def test_evaluate_official_protocol_is_labelled(tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", *ARGS[:4], "--num-videos", "1", *ARGS[6:], "--official-protocol", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["uses_ground_truth"] is True and report["num_samples"] == 1


@pytest.mark.parametrize("extra, message", [(["--samples", "0"], "--samples must be >= 1"),
                                            (["--times", "3.5"], "no query time has a ground-truth frame")])
def test_evaluate_bad_arguments(tmp_path, capsys, extra, message):
    assert main(["evaluate", "--checkpoint", "tiny", "--num-videos", "1", *extra, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
