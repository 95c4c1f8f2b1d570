"""Training: config/CLI, schedule, EMA, loss decrease, exact resume, crash-safe checkpoints."""
from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.testing import CompileCounterWithBackend

from stdiff.checkpoint import load_pretrained
from stdiff.commands import train as train_cmd
from stdiff.models import STDiff
from stdiff.training import EMA, TrainConfig, apply_overrides, cosine_with_warmup, ema_decay, train
from stdiff.training.state import (TrainingState, find_latest_valid, list_checkpoints, load_state,
                                   prune_checkpoints, remove_partial, save_state)
from stdiff.training.stream import ShardedBatches

ROOT = Path(__file__).resolve().parent.parent

# a ~0.7 M parameter model on 16x16 clips of 3 + 2 frames: a training step takes well under a second
MICRO = {
    "image_size": 16, "num_observed": 3, "num_future": 2, "train_future_k": 2,
    "motion": {"model_channels": 8}, "sde": {"dt": 0.5},
    "unet": {"block_out_channels": [16, 32, 32], "attention_head_dim": [None, None, 16], "norm_num_groups": 4},
}


def micro_config(out: Path, **kw) -> TrainConfig:
    base = dict(model=MICRO, out=str(out), steps=6, batch_size=4, workers=0, num_videos=64, save_every=2,
                keep_last=10, export_every=0, preview_every=0, log_every=1, warmup_steps=1, lr=1e-3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: much faster than two on a shared 2-core machine (no OpenMP spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- config -------------------------------------------------------------------------------------
def test_defaults_match_the_paper_settings():
    cfg = TrainConfig().validate()
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.grad_clip) == (1e-4, (0.95, 0.999), 1e-6, 1.0)
    assert cfg.model_config().image_size == 32 and cfg.warmup() == 100


def test_cli_precedence_file_then_flags_then_set(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"steps": 50, "lr": 3e-4, "batch_size": 8, "model": {"train_future_k": 2}}))
    parser = argparse.ArgumentParser()
    train_cmd.build(parser)
    args = parser.parse_args(["--config", str(cfg_file), "--steps", "70", "--bf16", "--out", str(tmp_path / "r"),
                              "--set", "batch_size=2", "--set", "model.unet.norm_num_groups=4", "--set", "betas=[0.9, 0.99]"])
    cfg = train_cmd.config_from_args(args)
    assert (cfg.steps, cfg.lr, cfg.batch_size, cfg.bf16, cfg.betas) == (70, 3e-4, 2, True, (0.9, 0.99))
    assert cfg.model_config().unet.norm_num_groups == 4 and cfg.model_config().train_future_k == 2
    assert not cfg.resume


@pytest.mark.parametrize("data, message", [
    ({"stepz": 3}, "unknown training config keys"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"ema_max_decay": "abc"}, r"ema_max_decay must be a number in \[0, 1\), got 'abc'"),
    ({"bf16": "maybe"}, "bf16 must be true or false, got 'maybe'"),
    ({"compile": "yes"}, "compile must be true or false, got 'yes'"),
    ({"channels_last": 1}, "channels_last must be true or false, got 1"),
    ({"steps": 100, "warmup_steps": 100}, r"warmup_steps must be < steps \(100\), got 100"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
    ({"lr_cycles": 0}, "lr_cycles must be an int >= 1"),
    ({"model": {"unet": 5}}, "model.unet must be a mapping of its fields .*got 5"),
    ({"model": {"unet": {"block_out_channels": []}}}, "unet.block_out_channels must have 1 to 8 entries, got 0"),
    ({"betas": [0.9]}, "betas must be two numbers"),
    ({"preset": "huge"}, "preset must be one of"),
    ({"model": {"unet": {"depth": 3}}}, "unknown key model.unet.depth"),
    ({"model": {"train_future_k": 99}}, "train_future_k must be in"),
    ({"preview_sampler": "euler"}, "preview_sampler must be one of"),
])
def test_bad_configs_name_the_problem(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize("override, message", [
    ("steps", "expects key=value"),
    ("nope=1", "unknown training config key 'nope'"),
    ("lr.x=1", "only 'model' has nested keys"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides({}, [override])


def test_bad_config_file(tmp_path):
    parser = argparse.ArgumentParser()
    train_cmd.build(parser)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_cmd.config_from_args(parser.parse_args(["--config", str(tmp_path / "missing.yaml")]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        train_cmd.config_from_args(parser.parse_args(["--config", str(bad)]))


def test_missing_data_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_videos"
    with pytest.raises(FileNotFoundError, match="no_such_videos"):
        train(micro_config(tmp_path / "run", data=str(missing)))
    with pytest.raises(ValueError, match="needs root"):
        train(micro_config(tmp_path / "run", data="kth"))


# ---- schedule and EMA ---------------------------------------------------------------------------
def test_cosine_schedule_warms_up_then_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5])) and lrs[4] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs[12] == pytest.approx(1.0)  # half way through the cosine


def test_ema_follows_the_diffusers_warmup_schedule():
    assert ema_decay(0) == 0.0 and ema_decay(1) == pytest.approx(1 - 2**-0.75)
    assert ema_decay(10**9) == 0.9999
    model = torch.nn.Linear(3, 2)
    ema = EMA(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert ema.update(model) == 0.0  # the first update copies
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), model.state_dict().values()))
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    decay = ema.update(model)
    assert decay == ema_decay(1) and ema.num_updates == 2
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, start[k] + (1 - decay))
    assert not any(p.requires_grad for p in ema.model.parameters())


# ---- data stream --------------------------------------------------------------------------------
def test_batches_are_sharded_and_resumable():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    r0 = take(ShardedBatches(50, 4, seed=3, rank=0, world_size=2), 12)  # 6 batches per epoch
    r1 = take(ShardedBatches(50, 4, seed=3, rank=1, world_size=2), 12)
    for a, b in zip(r0[:6], r1[:6]):
        assert not {i for _, i in a} & {i for _, i in b}
    assert {e for batch in r0[6:] for e, _ in batch} == {1}
    assert take(ShardedBatches(50, 4, seed=3, rank=1, world_size=2, start=5), 4) == r1[5:9]
    with pytest.raises(ValueError, match="too few"):
        ShardedBatches(5, 4, seed=0, world_size=2)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 60), batch=st.integers(1, 5), world=st.integers(1, 3), start=st.integers(0, 20),
       seed=st.integers(0, 3))
def test_sharded_batches_partition_each_epoch(length, batch, world, start, seed):
    if (length // world) // batch < 1:
        with pytest.raises(ValueError):
            ShardedBatches(length, batch, seed, 0, world)
        return
    per_epoch = (length // world) // batch
    streams = []
    for rank in range(world):
        it = iter(ShardedBatches(length, batch, seed, rank, world))
        streams.append([next(it) for _ in range(start + 2 * per_epoch)])
        resumed = iter(ShardedBatches(length, batch, seed, rank, world, start=start))
        assert [next(resumed) for _ in range(2 * per_epoch)] == streams[-1][start:]
    for epoch in range(2):
        keys = [k for s in streams for b in s[epoch * per_epoch:(epoch + 1) * per_epoch] for k in b]
        assert len(keys) == len(set(keys)) == world * per_epoch * batch  # disjoint across ranks and batches
        assert {e for e, _ in keys} == {epoch} and all(0 <= i < length for _, i in keys)


# ---- training -----------------------------------------------------------------------------------
def test_loss_decreases_and_export_holds_the_ema_weights(tmp_path):
    cfg = micro_config(tmp_path / "run", steps=30, batch_size=8, save_every=0, lr=2e-3, warmup_steps=2)
    result = train(cfg)
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    exported = load_pretrained(result.export_dir)
    assert_same(exported.state_dict(), result.ema_model.state_dict())
    assert list_checkpoints(tmp_path / "run" / "checkpoints")[-1].name == "step-0000030"
    with open(tmp_path / "run" / "logs" / "train.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == list(range(1, 31))


def test_resume_is_bit_exact(tmp_path):
    full = train(micro_config(tmp_path / "full", steps=6, save_every=2))
    # the same run, interrupted after its step-2 checkpoint: drop what came later and resume
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for name in ("step-0000004", "step-0000006"):
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
    shutil.rmtree(tmp_path / "cut" / "export")
    resumed = train(micro_config(tmp_path / "cut", steps=6, save_every=2, resume=True))
    assert resumed.losses[0][0] == 3
    assert_same(resumed.model.state_dict(), full.model.state_dict())
    assert_same(resumed.ema_model.state_dict(), full.ema_model.state_dict())
    assert resumed.losses == full.losses[2:]
    a = load_state(tmp_path / "full" / "checkpoints" / "step-0000006")
    b = load_state(tmp_path / "cut" / "checkpoints" / "step-0000006")
    assert_same(a.ema, b.ema)
    assert a.optimizer["state"][0]["exp_avg"].equal(b.optimizer["state"][0]["exp_avg"])
    with open(tmp_path / "cut" / "logs" / "train.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == list(range(1, 7))


def _moved_apart(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    """Summed |a - b| over the weights, relative to how far training moved ``a`` from ``start`` (summed |a - start|)."""
    apart = sum(float((a[k] - b[k]).abs().sum()) for k in a)
    moved = sum(float((a[k] - start[k]).abs().sum()) for k in a)
    return apart / moved


def test_channels_last_trains_the_same_model_and_resumes_bit_exact(tmp_path):
    torch.manual_seed(0)  # the runs' initial weights (seed 0)
    start = STDiff(micro_config(tmp_path / "unused").model_config()).state_dict()
    plain = train(micro_config(tmp_path / "plain", steps=4, save_every=2))
    last = train(micro_config(tmp_path / "last", steps=4, save_every=2, channels_last=True))
    conv = next(p for p in last.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert [s for s, _ in last.losses] == [s for s, _ in plain.losses]
    assert [l for _, l in last.losses] == pytest.approx([l for _, l in plain.losses], rel=1e-3)
    assert _moved_apart(plain.model.state_dict(), last.model.state_dict(), start) < 0.02
    exported = load_pretrained(last.export_dir).state_dict()  # written from the EMA copy, default layout
    assert_same(exported, {k: v.contiguous() for k, v in last.ema_model.state_dict().items()})
    shutil.copytree(tmp_path / "last", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-0000004")
    shutil.rmtree(tmp_path / "cut" / "export")
    shutil.copytree(tmp_path / "cut", tmp_path / "switched")
    resumed = train(micro_config(tmp_path / "cut", steps=4, save_every=2, channels_last=True, resume=True))
    assert_same(resumed.model.state_dict(), last.model.state_dict())
    assert resumed.losses == last.losses[2:]
    # the layout is a run option: a run may resume without it (same numerics up to rounding)
    switched = train(micro_config(tmp_path / "switched", steps=4, save_every=2, resume=True))
    assert [l for _, l in switched.losses] == pytest.approx([l for _, l in last.losses[2:]], rel=1e-3)


def test_compiled_loss_trains_the_same_model(tmp_path, monkeypatch):
    # aot_eager: Dynamo capture and AOTAutograd's joint graph, what Inductor receives (Inductor's CPU
    # code generation takes minutes here and is not about the training loop; see test_compile.py)
    backend = CompileCounterWithBackend("aot_eager")  # counts the frames Dynamo compiles
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    torch.manual_seed(0)
    start = STDiff(micro_config(tmp_path / "unused").model_config()).state_dict()
    plain = train(micro_config(tmp_path / "plain", steps=3, save_every=0))
    assert backend.frame_count == 0
    torch._dynamo.reset()
    compiled = train(micro_config(tmp_path / "compiled", steps=3, save_every=0, compile=True))
    assert backend.frame_count > 0  # Dynamo did compile the loss
    assert [l for _, l in compiled.losses] == pytest.approx([l for _, l in plain.losses], rel=1e-3)
    assert _moved_apart(plain.model.state_dict(), compiled.model.state_dict(), start) < 0.02


def test_out_dir_with_checkpoints_needs_resume(tmp_path):
    train(micro_config(tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="pass --resume"):
        train(micro_config(tmp_path / "run", steps=4))
    with pytest.raises(ValueError, match="raise --steps"):
        train(micro_config(tmp_path / "run", steps=2, resume=True))
    with pytest.raises(ValueError, match="different model config"):
        train(micro_config(tmp_path / "run", steps=4, resume=True, model={**MICRO, "train_future_k": 1}))


def test_corrupt_latest_checkpoint_is_skipped_with_a_warning(tmp_path):
    train(micro_config(tmp_path / "run", steps=4, save_every=2))
    root = tmp_path / "run" / "checkpoints"
    latest = root / "step-0000004" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="skipping corrupt checkpoint.*step-0000004"):
        state = find_latest_valid(root)
    assert state.step == 2
    with pytest.warns(RuntimeWarning, match="skipping corrupt checkpoint"):
        result = train(micro_config(tmp_path / "run", steps=4, save_every=2, resume=True))
    assert result.losses[0][0] == 3


def _dummy_state(step: int, size: int) -> TrainingState:
    value = torch.full((size,), float(step))
    return TrainingState(step=step, model={"w": value}, ema={"w": value.clone()}, ema_updates=step,
                         optimizer={"state": {}, "param_groups": []}, scheduler={"last_epoch": step},
                         rng=[{"loss_generator": torch.Generator().get_state()}])


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        save_state(tmp_path, _dummy_state(step, 4))
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004"]


def test_sigkill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from test_training import _dummy_state
        from stdiff.training.state import save_state, prune_checkpoints
        step = 0
        while True:
            step += 1
            save_state(sys.argv[1], _dummy_state(step, 2_000_000))
            prune_checkpoints(sys.argv[1], 3)
            print(step, flush=True)
    """))
    root = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(4):  # let it finish a few checkpoints, then kill it in the middle of the next ones
            assert proc.stdout.readline(), "saver process died"
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # atomic saves: no checkpoint in the listing may be corrupt
        states = [load_state(p) for p in list_checkpoints(root)]
        latest = find_latest_valid(root)
    assert len(states) >= 3 and latest.step == states[-1].step >= 4
    assert torch.all(latest.model["w"] == latest.step)
    remove_partial(root)
    assert sorted(p.name for p in root.iterdir()) == [p.name for p in list_checkpoints(root)]


# ---- command line ---------------------------------------------------------------------------------
def test_train_command_end_to_end(tmp_path, capsys):
    cfg_file = tmp_path / "micro.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": MICRO, "num_videos": 16, "preview_steps": 2, "preview_clips": 2}))
    parser = argparse.ArgumentParser()
    train_cmd.build(parser)
    out = tmp_path / "run"
    argv = ["--config", str(cfg_file), "--preset", "tiny", "--data", "synthetic", "--steps", "2", "--out", str(out),
            "--batch-size", "2", "--workers", "1", "--save-every", "1", "--keep-last", "1", "--export-every", "1",
            "--preview-every", "2", "--grad-accum", "2", "--bf16", "--seed", "5"]
    assert train_cmd.run(parser.parse_args(argv)) == 0
    assert "exported to" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002"]
    assert (out / "previews" / "step-0000002.gif").stat().st_size > 0
    assert load_pretrained(out / "export").config.image_size == 16
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["grad_accum"] == 2 and saved["bf16"] is True and saved["seed"] == 5
    assert any((out / "logs" / "tb").iterdir())
    # quick evaluation reads the export and a training checkpoint (EMA weights) alike
    from stdiff.training.quickeval import main as quickeval

    scores = [quickeval([str(path), "--clips", "3", "--steps", "2", "--batch-size", "2", "--samples", "2"])
              for path in (out / "export", out / "checkpoints" / "step-0000002")]
    for score in scores:
        score.pop("seconds")
    assert scores[0] == scores[1] and scores[0]["clips"] == 3
    assert 0 < scores[0]["copy_last_mse"] < scores[0]["blank_mse"] and scores[0]["model_mean_mse"] > 0


def test_one_step_mse_scores_the_baselines():
    from stdiff.models import STDiff
    from stdiff.training.quickeval import one_step_mse

    model = STDiff(micro_config(Path("unused")).model_config())
    clips = torch.rand(3, 4, 1, 16, 16)
    scores = one_step_mse(model, clips, steps=2)
    assert scores["copy_last_mse"] == pytest.approx(((clips[:, 2] - clips[:, 3]) ** 2).mean().item())
    assert scores["blank_mse"] == pytest.approx((clips[:, 3] ** 2).mean().item())
    with pytest.raises(ValueError, match="T >= To"):
        one_step_mse(model, clips[:, :3])


def test_init_from_starts_from_an_export_and_refuses_another_architecture(tmp_path):
    from stdiff.checkpoint import save_pretrained
    from stdiff.config import preset
    from stdiff.models import STDiff
    from stdiff.training.loop import _init_weights

    torch.manual_seed(1)
    source = STDiff(preset("tiny"))
    save_pretrained(source, tmp_path / "export")
    torch.manual_seed(2)
    target = STDiff(preset("tiny"))
    _init_weights(target, str(tmp_path / "export"))
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    smaller = preset("tiny")
    smaller.unet.block_out_channels = [16, 32, 32]
    with pytest.raises(ValueError, match="init_from"):
        _init_weights(STDiff(smaller.validate()), str(tmp_path / "export"))
