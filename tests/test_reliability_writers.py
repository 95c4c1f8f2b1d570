"""Reliability, round 2: one writer per folder and resume rules (issue 24, items 3 and 5), through the
CLI in subprocesses: a second `stdiff train/evaluate/predict` on a folder being written is refused,
stale locks are taken over, `--resume` keeps the recorded settings, refuses changed ones and keeps
the learning rate continuous when --steps changes."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from stdiff.checkpoint import save_pretrained
from stdiff.fileio import FolderLocked, folder_lock, lock_path
from stdiff.training import train
from stdiff.training.state import load_state

from test_predictor import micro_model
from test_reliability_files import stdiff_cli
from test_training import MICRO, micro_config, one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["--workers", "0", "--export-every", "0", "--preview-every", "0", "--log-every", "1"]


@pytest.fixture()
def micro_yaml(tmp_path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump({"model": MICRO, "num_videos": 16}))
    return path


def popen_cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stdiff", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lock(folder: Path, pid: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = json.loads(lock_path(folder).read_text())
            if holder.get("pid") == pid:
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no lock of pid {pid} on {folder}")


# ---- item 5: one writer per folder -------------------------------------------------------------------------
def test_second_train_on_one_out_is_refused_and_stale_locks_are_taken_over(tmp_path, micro_yaml):
    out = tmp_path / "run"
    first = popen_cli("train", "--config", str(micro_yaml), "--steps", "100000", "--out", str(out),
                      "--save-every", "0", *QUIET)
    try:
        holder = wait_for_lock(out, first.pid)
        assert holder["host"] and "train" in holder["command"]
        second = stdiff_cli("train", "--config", str(micro_yaml), "--steps", "1", "--out", str(out), *QUIET)
        assert second.returncode == 2, second.stderr
        assert "is being written by another run" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # killed: no chance to release, the lock file stays behind
        first.communicate()
    assert json.loads(lock_path(out).read_text())["pid"] == first.pid  # stale: its process is gone
    third = stdiff_cli("train", "--config", str(micro_yaml), "--steps", "1", "--out", str(out), "--save-every", "1",
                       *QUIET)
    assert third.returncode == 0, third.stderr
    assert not lock_path(out).exists()  # released on exit


@pytest.fixture()
def predict_inputs(tmp_path) -> tuple[Path, Path]:
    checkpoint = save_pretrained(micro_model(), tmp_path / "export")
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(4):
        Image.fromarray(np.full((16, 16, 3), 50 * k, np.uint8)).save(frames / f"{k}.png")
    return checkpoint, frames


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_a_folder_being_written(tmp_path, predict_inputs, command):
    checkpoint, frames = predict_inputs
    out = tmp_path / "out"
    argv = {"predict": ["--input", str(frames), "--num-frames", "1"],
            "evaluate": ["--data", "synthetic", "--num-videos", "1", "--samples", "1", "--batch-size", "1"]}[command]
    argv = [command, "--checkpoint", str(checkpoint), *argv, "--steps", "1", "--out", str(out), "--no-progress"]
    with folder_lock(out, "--out"):  # another writer (this process) holds the folder
        refused = stdiff_cli(*argv)
        assert refused.returncode == 2 and "is being written by another run" in refused.stderr, refused.stderr
        assert f"pid {os.getpid()}" in refused.stderr and not out.exists()
        with pytest.raises(FolderLocked):  # a second holder in one process is refused as well
            with folder_lock(out, "--out"):
                pass
    done = stdiff_cli(*argv)
    assert done.returncode == 0, done.stderr
    assert out.is_dir() and not lock_path(out).exists()


# ---- item 3: resume rules ----------------------------------------------------------------------------------
def test_resume_keeps_the_recorded_settings_and_refuses_changed_ones(tmp_path, micro_yaml):
    out = tmp_path / "run"
    first = stdiff_cli("train", "--config", str(micro_yaml), "--steps", "2", "--out", str(out), "--batch-size", "2",
                       "--lr", "0.002", "--seed", "3", "--warmup-steps", "1", "--save-every", "1", *QUIET)
    assert first.returncode == 0, first.stderr
    # omitted options come from the checkpoint, not from the defaults; more steps is a logged change
    resumed = stdiff_cli("train", "--resume", "--out", str(out), "--steps", "4", "--workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert (saved["batch_size"], saved["lr"], saved["seed"], saved["steps"]) == (2, 0.002, 3, 4)
    assert saved["model"]["image_size"] == MICRO["image_size"]
    assert "steps changed from 2 to 4 at step 2" in resumed.stdout + resumed.stderr
    for flag, value, field in [("--lr", "1", "lr: 0.002 -> 1.0"), ("--batch-size", "8", "batch_size: 2 -> 8"),
                               ("--seed", "0", "seed: 3 -> 0"), ("--grad-accum", "2", "grad_accum: 1 -> 2")]:
        before = sorted(p.name for p in (out / "checkpoints").iterdir())
        changed = stdiff_cli("train", "--resume", "--out", str(out), "--steps", "6", "--workers", "0", flag, value)
        assert changed.returncode == 2 and field in changed.stderr, changed.stderr
        assert "was trained with other settings" in changed.stderr and "Traceback" not in changed.stderr
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing written
    assert yaml.safe_load((out / "train_config.yaml").read_text()) == saved


def lrs(out: Path) -> dict[int, float]:
    with open(out / "logs" / "train.csv") as fh:
        return {int(row["step"]): float(row["lr"]) for row in csv.DictReader(fh)}


def test_more_steps_on_resume_keep_the_learning_rate_continuous(tmp_path):
    full = tmp_path / "full"
    train(micro_config(full, steps=8, save_every=2))
    shutil.copytree(full, tmp_path / "cut")  # interrupted after its step-4 checkpoint
    for name in ("step-0000006", "step-0000008"):
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
    train(micro_config(tmp_path / "cut", steps=16, save_every=2, resume=True))
    before, after = lrs(full), lrs(tmp_path / "cut")
    assert [after[s] for s in range(1, 6)] == [before[s] for s in range(1, 6)]  # the same run up to step 5
    tail = [after[s] for s in range(5, 17)]
    assert all(b <= a for a, b in zip(tail, tail[1:])), tail  # decays from there: no jump back up
    assert tail[-1] < 0.05 * tail[0]
    plan = load_state(tmp_path / "cut" / "checkpoints" / "step-0000016").meta["lr_plan"]
    assert plan["total"] == 8 and plan["extensions"][0][:3] == [4, pytest.approx(before[5] / 1e-3, rel=1e-3), 16]
    # resuming the extended run again follows the recorded plan (bit-exact continuation)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-0000016")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-0000014")
    train(micro_config(tmp_path / "cut", steps=16, save_every=2, resume=True))
    assert lrs(tmp_path / "cut")[16] == after[16] and lrs(tmp_path / "cut")[13] == after[13]
