"""Reliability of training: corrupt checkpoints on resume, pruning, checksums, signals (single
process and torchrun), the official LR schedule and bad configs through the CLI."""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stdiff import cli
from stdiff.training import train
from stdiff.training.schedule import cosine_with_restarts
from stdiff.training.state import list_checkpoints, load_state, prune_checkpoints, save_state

from test_training import MICRO, _dummy_state, micro_config, one_thread  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent


def flip_a_bit(path: Path, offset_from_end: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


# ---- resume and pruning ---------------------------------------------------------------------------
def test_resume_with_only_corrupt_checkpoints_stops_and_deletes_nothing(tmp_path):
    train(micro_config(tmp_path / "run", steps=4, save_every=2, export_every=2))
    root = tmp_path / "run" / "checkpoints"
    for path in list_checkpoints(root):
        flip_a_bit(path / "ema.safetensors")  # bit flips inside tensor data: only the checksum sees them
    export_before = (tmp_path / "run" / "export" / "model.safetensors").read_bytes()
    with pytest.warns(RuntimeWarning, match="checksum mismatch"):
        with pytest.raises(ValueError, match=r"every checkpoint .* is corrupt \(step-0000002, step-0000004\)"):
            train(micro_config(tmp_path / "run", steps=8, save_every=2, export_every=2, keep_last=1, resume=True))
    assert [p.name for p in list_checkpoints(root)] == ["step-0000002", "step-0000004"]
    assert (tmp_path / "run" / "export" / "model.safetensors").read_bytes() == export_before


def test_pruning_keeps_the_checkpoint_just_written(tmp_path):
    for step in (2, 4, 6):
        save_state(tmp_path, _dummy_state(step, 4))
    # resumed from step 2 (4 and 6 corrupt), step 3 written with keep_last=1: 3 survives, 4 and 6 wait
    save_state(tmp_path, _dummy_state(3, 4))
    prune_checkpoints(tmp_path, 1, upto=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004", "step-0000006"]


def test_training_checkpoint_checksums_are_verified(tmp_path):
    save_state(tmp_path, _dummy_state(1, 1000))
    flip_a_bit(tmp_path / "step-0000001" / "model.safetensors")
    with pytest.raises(ValueError, match="checksum mismatch .*model.safetensors"):
        load_state(tmp_path / "step-0000001")


# ---- LR schedule ------------------------------------------------------------------------------------
def diffusers_hard_restarts(step: int, warmup: int, total: int, cycles: int) -> float:
    """diffusers.optimization.get_cosine_with_hard_restarts_schedule_with_warmup's lr_lambda."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def test_cosine_with_restarts_is_the_official_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3.0)
    sched = cosine_with_restarts(opt, warmup_steps=5, total_steps=45, cycles=2)
    lrs = []
    for _ in range(46):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([3.0 * diffusers_hard_restarts(s, 5, 45, 2) for s in range(46)], abs=1e-12)
    assert lrs[5] == pytest.approx(3.0) and lrs[25] == pytest.approx(3.0)  # the restart half way
    assert lrs[24] < 0.05 and lrs[45] == 0.0


def test_lr_schedule_option_reaches_the_optimizer(tmp_path):
    import csv

    train(micro_config(tmp_path / "run", steps=6, warmup_steps=2, lr_schedule="cosine_with_restarts", lr_cycles=2,
                       save_every=0, lr=1e-3))
    with open(tmp_path / "run" / "logs" / "train.csv") as fh:
        logged = [float(row["lr"]) for row in csv.DictReader(fh)]
    assert logged == pytest.approx([1e-3 * diffusers_hard_restarts(s, 2, 6, 2) for s in range(6)], rel=1e-6)


# ---- the CLI -----------------------------------------------------------------------------------------
def stdiff_train(out: Path, *extra: str, popen: bool = False, env_extra: dict | None = None):
    cfg = out.parent / "micro.yaml"
    cfg.write_text(yaml.safe_dump({"model": MICRO, "num_videos": 16, "warmup_steps": 1}))
    argv = [sys.executable, "-m", "stdiff", "train", "--config", str(cfg), "--out", str(out), "--batch-size", "2",
            "--workers", "0", "--preview-every", "0", "--log-every", "1", "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    if popen:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    log = out / "logs" / "train.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if log.is_file() and len(log.read_text().splitlines()) > step:  # header + one row per step
            return
        time.sleep(0.1)
    pytest.fail(f"training did not reach step {step}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_non_zero(tmp_path, signum):
    out = tmp_path / "run"
    proc = stdiff_train(out, "--steps", "100000", "--save-every", "0", "--export-every", "0", popen=True)
    try:
        wait_for_step(out, 3, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "continue with --resume" in err
    saved = load_state(list_checkpoints(out / "checkpoints")[-1])
    assert saved.step >= 3


SIGNAL_SCRIPT = """
import os, signal, sys, time
from stdiff.training.signals import GRACE_S, StopRequest
with StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # within the grace period: the same request (torchrun's forward)
    time.sleep(0.1)
    print("requested", stop.signum, flush=True)
    time.sleep(GRACE_S + 0.2)
    os.kill(os.getpid(), signal.SIGTERM)  # a real second signal: the default action, at once
    time.sleep(5)
    print("survived", flush=True)
"""


def test_second_signal_aborts_at_once():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["requested", str(int(signal.SIGTERM))], proc.stderr[-2000:]
    assert proc.returncode == -signal.SIGTERM


def test_torchrun_ranks_stop_together_and_save(tmp_path):
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(yaml.safe_dump({"model": MICRO, "num_videos": 16, "warmup_steps": 1}))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "stdiff",
            "train", "--config", str(cfg), "--out", str(out), "--batch-size", "2", "--workers", "0",
            "--preview-every", "0", "--log-every", "1", "--device", "cpu", "--steps", "100000", "--save-every", "0",
            "--export-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(out, 2, proc)
        proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    saved = load_state(list_checkpoints(out / "checkpoints")[-1])
    assert saved.step >= 2 and len(saved.rng) == 2, err[-3000:]


@pytest.mark.parametrize("argv, message", [
    (["--set", "model.unet=5"], "model.unet must be a mapping"),
    (["--set", "ema_max_decay=abc"], r"ema_max_decay must be a number in \[0, 1\)"),
    (["--set", "bf16=maybe"], "bf16 must be true or false"),
    (["--set", "model.unet.block_out_channels=[]"], "block_out_channels must have 1 to 8 entries, got 0"),
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--warmup-steps", "50", "--steps", "10"], r"warmup_steps must be < steps \(10\)"),
    (["--config", "DIR"], "is not a file, expected a YAML file"),
    (["--config", "BINARY"], "is not a text file"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--out", "FILE"], "--out .* is a file, expected a folder"),
    (["--lr-schedule", "step"], "lr_schedule must be one of"),
])
def test_train_bad_inputs_are_one_line_errors(tmp_path, capsys, argv, message):
    if argv == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    binary = tmp_path / "config.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "file").write_text("x")
    swap = {"DIR": str(tmp_path), "BINARY": str(binary), "FILE": str(tmp_path / "file")}
    argv = [swap.get(a, a) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert cli.main(["train", "--steps", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("stdiff train: error:")
    assert re.search(message, err), err
