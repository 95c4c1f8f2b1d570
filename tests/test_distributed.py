"""DDP training: 2 gloo processes on CPU under torchrun end with identical weights on both ranks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from stdiff.checkpoint import load_pretrained
from stdiff.training.state import list_checkpoints, load_state

ROOT = Path(__file__).resolve().parent.parent

MICRO = {
    "image_size": 16, "num_observed": 3, "num_future": 2, "train_future_k": 2,
    "motion": {"model_channels": 8}, "sde": {"dt": 0.5},
    "unet": {"block_out_channels": [16, 32, 32], "attention_head_dim": [None, None, 16], "norm_num_groups": 4},
}

# runs `stdiff train` in each torchrun process, then writes that rank's final weights (test only)
SCRIPT = """
import argparse, os, sys
from safetensors.torch import save_file
from stdiff.commands import train as cmd
from stdiff.training import train

parser = argparse.ArgumentParser()
cmd.build(parser)
result = train(cmd.config_from_args(parser.parse_args(sys.argv[2:])))
rank = os.environ["RANK"]
save_file(result.model.state_dict(), os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
save_file(result.ema_model.state_dict(), os.path.join(sys.argv[1], f"ema{rank}.safetensors"))
"""


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    cfg_file = tmp_path / "micro.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": MICRO, "num_videos": 32, "warmup_steps": 1, "lr": 1e-3}))
    out = tmp_path / "run"
    args = ["--config", str(cfg_file), "--steps", "3", "--out", str(out), "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--save-every", "2", "--export-every", "0", "--preview-every", "0", "--grad-accum", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           str(tmp_path), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    ema0, ema1 = load_file(str(tmp_path / "ema0.safetensors")), load_file(str(tmp_path / "ema1.safetensors"))
    assert all(torch.equal(ema0[k], ema1[k]) for k in ema0)
    # rank 0 wrote the checkpoints (with both ranks' RNG states) and the EMA export
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002", "step-0000003"]
    state = load_state(out / "checkpoints" / "step-0000003")
    assert len(state.rng) == 2 and state.meta["world_size"] == 2
    assert not torch.equal(state.rng[0]["loss_generator"], state.rng[1]["loss_generator"])
    assert all(torch.equal(state.model[k], rank0[k]) for k in rank0)
    exported = load_pretrained(out / "export").state_dict()
    assert all(torch.equal(exported[k], ema0[k]) for k in ema0)
