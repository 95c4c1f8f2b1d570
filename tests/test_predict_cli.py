"""``stdiff predict`` (through ``python -m stdiff`` in a subprocess): bad times, fps and work limits
are refused with one clear line and exit code 2, before any frame is predicted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{k:03d}.png")
    return folder


def _predict(frames: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "stdiff", "predict", "--checkpoint", "tiny", "--input", str(frames),
           "--out", str(out), "--steps", "1", "--no-progress", "--device", "cpu", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("extra, message", [
    (["--num-frames", "2", "--fps", "0"], "fps must be a finite number in (0, 1e+06]"),
    (["--num-frames", "2", "--fps", "nan"], "fps must be a finite number"),
    (["--num-frames", "2", "--fps", "1e9"], "fps must be a finite number in (0, 1e+06]"),
    (["--num-frames", "2", "--fps", "1e-300"], "fps=1e-300 with num_frames=2 puts the last time beyond"),
    (["--times", "nan"], "--times must be finite numbers"),
    (["--times", "4,4.0000001"], "at least 1e-06 frame units apart"),
    (["--times", "1e12"], "above the limit max_frames"),
    (["--times", "4", "--samples", "10000"], "above the limit max_batch"),
    (["--times", "4,5", "--max-frames", "1"], "denoised frames per trajectory 2, above the limit max_frames=1"),
    (["--times", "4", "--max-batch", "0"], "--max-frames, --max-batch and --max-memory-gb must be > 0"),
])
def test_bad_requests_are_refused_clearly(frames, tmp_path, extra, message):
    run = _predict(frames, tmp_path / "out", *extra)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_raised_limit_lets_the_request_through(frames, tmp_path):
    run = _predict(frames, tmp_path / "out", "--times", "4,5", "--max-frames", "2", "--context", "4")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "prediction.npz").is_file()
