"""`stdiff evaluate` end to end on the tiny preset: report files, fractional times, resume only when the
run settings match, the official protocol, and clear errors (through the CLI in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from stdiff.checkpoint import save_pretrained
from stdiff.cli import main
from stdiff.config import preset
from stdiff.models import STDiff

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--checkpoint", "tiny", "--num-videos", "2", "--batch-size", "1", "--samples", "2",
        "--sampler", "ddim", "--steps", "2", "--num-frames", "4", "--fps", "2", "--no-progress"]
QUICK = ["--num-videos", "1", "--samples", "1", "--sampler", "ddim", "--steps", "1", "--num-frames", "1",
         "--device", "cpu", "--no-progress"]


def _stdiff(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stdiff", "evaluate", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny models with different random weights, saved as checkpoint folders."""
    root = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_pretrained(STDiff(preset("tiny")), root / f"model{seed}"))
    return paths


def test_evaluate_writes_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", *ARGS, "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_videos"] == 2 and report["num_samples"] == 2
    assert report["times"] == [4.0, 5.0]  # the fractional times 3.5, 4.5 have no ground truth
    assert report["uses_ground_truth"] is False and report["ssim"].startswith("scikit-image")
    assert report["settings"]["sampler"] == "ddim" and report["settings"]["query_times"] == [3.5, 4.0, 4.5, 5.0]
    assert (out / "metrics.csv").stat().st_size > 0 and (out / "metrics.png").stat().st_size > 0
    state = json.loads((out / "state.json").read_text())
    assert len(state["batches_done"]) == 2
    before = (out / "metrics.json").read_text()
    assert main(["evaluate", *ARGS, "--out", str(out)]) == 0  # all batches done: nothing recomputed
    assert (out / "metrics.json").read_text() == before


def test_evaluate_official_protocol(tmp_path):
    out = tmp_path / "eval"
    args = ["--checkpoint", "tiny", "--num-videos", "1", "--samples", "3", "--first-frame-candidates", "2",
            "--sampler", "ddim", "--steps", "1", "--num-frames", "2", "--no-progress"]
    assert main(["evaluate", *args, "--official-protocol", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["uses_ground_truth"] is True and report["num_samples"] == 3
    assert report["ssim"].startswith("official") and report["settings"]["first_frame_candidates"] == 2
    # the chosen first frame is shared by all samples: best of S equals their mean at frame 0
    psnr_stats = report["metrics"]["psnr"]["statistics"]
    assert psnr_stats["best_of_samples"]["per_frame"][0] == psnr_stats["mean_over_samples"]["per_frame"][0]


def test_evaluate_resumes_only_the_same_run(tmp_path, checkpoints):
    out = tmp_path / "eval"
    first = _stdiff("--checkpoint", str(checkpoints[0]), *QUICK, "--out", str(out))
    assert first.returncode == 0, first.stderr
    report = (out / "metrics.json").read_text()
    for change, difference in [(["--checkpoint", str(checkpoints[1])], "checkpoint_sha256"),
                               (["--steps", "2"], "settings.steps: 1 -> 2"),
                               (["--seed", "1"], "settings.seed: 0 -> 1"),
                               (["--split", "train"], 'settings.split: "test" -> "train"')]:
        args = ["--checkpoint", str(checkpoints[0]), *QUICK, "--out", str(out), *change]
        refused = _stdiff(*args)
        assert refused.returncode == 2, refused.stderr
        assert "holds another evaluation" in refused.stderr and difference in refused.stderr
        assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
        assert (out / "metrics.json").read_text() == report
    again = _stdiff("--checkpoint", str(checkpoints[1]), *QUICK, "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stderr
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["checkpoint_sha256"] != json.loads(report)["settings"]["checkpoint_sha256"]
    resumed = _stdiff("--checkpoint", str(checkpoints[1]), *QUICK, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["settings"] == settings


def test_evaluate_clear_errors(tmp_path):
    not_i3d = tmp_path / "linear.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torch.nn.Linear(3, 3)).save(str(not_i3d))
    cases = [
        (["--num-videos", "0"], {}, "--num-videos must be >= 1, got 0"),
        (["--i3d", str(not_i3d)], {}, "not the StyleGAN-V I3D: its forward takes (input), expected (x, rescale"),
        (["--device", "cuda"], {"CUDA_VISIBLE_DEVICES": ""}, "--device 'cuda': CUDA is not available (no usable GPU); "
                                                             "use --device cpu or auto"),
    ]
    for extra, env, message in cases:
        args = ["--checkpoint", "tiny", *QUICK, "--out", str(tmp_path / "out"), *extra]
        if "--device" in extra:
            args.remove("cpu"), args.remove("--device")
        proc = _stdiff(*args, env=env)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [(["--samples", "0"], "--samples must be >= 1"),
                                            (["--first-frame-candidates", "0"], "--first-frame-candidates must be"),
                                            (["--times", "3.5"], "no query time has a ground-truth frame"),
                                            (["--times", "3.5,4", "--official-protocol"],
                                             "the first query time must be an integer frame time")])
def test_evaluate_bad_arguments(tmp_path, capsys, extra, message):
    assert main(["evaluate", "--checkpoint", "tiny", "--num-videos", "1", *extra, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_stride_protocol_through_the_cli(tmp_path):
    """`--stride 2`: in-between frames scored against real ones, beside copy-last and the 1x blend."""
    out = tmp_path / "stride"
    result = _stdiff("--checkpoint", "tiny", "--stride", "2", "--num-videos", "2", "--samples", "1",
                     "--sampler", "ddim", "--steps", "1", "--device", "cpu", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "stride.json").read_text())
    assert report["protocol"] == "stride" and report["stride"] == 2 and report["videos"] == 2
    assert set(report["summary"]) == {"model", "copy_last", "blend"}
    assert [row["time"] for row in report["per_frame"]] == [3.5, 4.0, 4.5, 5.0, 5.5, 6.0]
    assert [row["on_grid"] for row in report["per_frame"]] == [False, True] * 3
    assert "blend" in result.stdout and (out / "stride.csv").stat().st_size > 0
    refused = _stdiff("--checkpoint", "tiny", "--stride", "2", "--times", "4,5", "--out", str(tmp_path / "x"))
    assert refused.returncode != 0 and "--stride" in refused.stderr
