"""Reliability, round 2: hostile model folders (bounds, checksum names, size, versions, missing
tables), weights of another precision or with NaN, symlink cycles in training data (issue 24,
items 7 to 10)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stdiff import Predictor
from stdiff.checkpoint import config_sha256, load_pretrained, save_pretrained

from test_predictor import FAST, micro_model, one_thread  # noqa: F401 (autouse fixture)
from test_reliability_files import stdiff_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def export(tmp_path) -> Path:
    return save_pretrained(micro_model(), tmp_path / "export")


def edit_config(folder: Path, edit, reseal: bool = True) -> None:
    """Apply ``edit`` to config.json's mapping; ``reseal``: record the matching config checksum (a
    careless hand edit that also fixes the checksum, so that only the content is judged)."""
    meta = json.loads((folder / "config.json").read_text())
    edit(meta)
    if reseal and isinstance(meta.get("checksums"), dict) and "config.json" in meta["checksums"]:
        meta["checksums"]["config.json"] = config_sha256(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def set_key(path: str, value):
    """An edit setting ``meta[a][b]...`` for the dotted ``path``."""
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


# ---- item 7 and 11: every config field against sane bounds, named, before building anything ---------
HOSTILE = [
    ("model.num_train_timesteps", 20000, r"num_train_timesteps must be an int in \[1, 10000\]"),
    ("model.num_train_timesteps", 1e9, r"num_train_timesteps must be an int"),
    ("model.unet.layers_per_block", 100000, r"unet.layers_per_block must be an int in \[1, 16\]"),
    ("model.sde.n_layers", 100000, r"sde.n_layers must be an int in \[1, 64\]"),
    ("model.sde.dt", 1e-9, r"sde.dt must be a finite number in \[0.001, 1\]"),
    ("model.sde.dt", float("inf"), r"sde.dt must be a finite number"),
    ("model.sde.dt", float("nan"), r"sde.dt must be a finite number"),
    ("model.num_future", 1e9, r"num_future must be an int in \[1, 10000\]"),
    ("model.num_future", 10**9, r"num_future must be an int in \[1, 10000\]"),
    ("model.image_size", 32.0, r"image_size must be an int in \[8, 1024\], got 32.0"),
    ("model.image_size", 10**6, r"image_size must be an int in \[8, 1024\]"),
    ("model", None, r"model config must be a mapping"),
    ("model", [1, 2], r"model config must be a mapping"),
    ("model.motion", [1, 2], r"motion must be a mapping of MotionConfig fields"),
    ("model.sde", "fast", r"sde must be a mapping of SDEConfig fields"),
    ("model.motion.model_channels", -8, r"motion.model_channels must be an int in \[1, 4096\]"),
    ("model.motion.n_downs", 40, r"motion.n_downs must be an int in \[0, 6\]"),
    ("model.motion.standard_gru", "yes", r"motion.standard_gru must be true or false"),
    ("model.unet.block_out_channels", [8, 10**6], r"unet.block_out_channels\[1\] must be an int in \[1, 4096\]"),
    ("model.unet.block_out_channels", 8, r"unet.block_out_channels must be a list"),
    ("model.unet.norm_num_groups", 3, r"unet.block_out_channels\[0\] = 8 must be divisible by unet.norm_num_groups"),
    ("model.unet.attention_head_dim", [None, -1], r"unet.attention_head_dim\[1\] must be an int"),
    ("model.unet.down_block_types", ["DownBlock2D", "Evil"], r"unet.down_block_types\[1\] must be one of"),
    ("model.beta_end", 5.0, r"beta_end must be a finite number in"),
    ("model.beta_start", 0.05, r"beta_start must be < beta_end"),
    ("model.loss_weight_cap", float("inf"), r"loss_weight_cap must be a finite number"),
    ("model.num_observed", True, r"num_observed must be an int"),
]


@pytest.mark.parametrize("path, value, message", HOSTILE, ids=[f"{p}={v!r}" for p, v, _ in HOSTILE])
def test_hostile_config_fields_are_refused_by_name_before_building(export, path, value, message):
    edit_config(export, set_key(path, value))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_pretrained(export)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("name", ["/dev/zero", "../config.json", "../../etc/passwd", "sub/model.safetensors", ".."])
def test_checksum_names_only_inside_the_folder(export, name):
    edit_config(export, lambda meta: meta["checksums"].update({name: "0"}))
    with pytest.raises(ValueError, match="checksums may name only"):
        load_pretrained(export)


def test_oversized_config_is_refused_without_reading_it(export):
    text = (export / "config.json").read_text()
    (export / "config.json").write_text(text + " " * (2 << 20))  # valid JSON padded with whitespace
    with pytest.raises(ValueError, match=r"config.json' is [\d,]+ bytes, above the limit of 1,048,576"):
        load_pretrained(export)


# ---- item 9: checksums cover config.json, are required, versions are checked --------------------------
def test_edited_config_is_detected_by_its_checksum(export):
    edit_config(export, set_key("model.sde.method", "euler"), reseal=False)  # valid, but not what was saved
    with pytest.raises(ValueError, match="checksum mismatch .*config.json changed"):
        load_pretrained(export)


@pytest.mark.parametrize("edit", [lambda m: m.pop("checksums"), lambda m: m.update(checksums={}),
                                  lambda m: m["checksums"].pop("config.json"),
                                  lambda m: m["checksums"].pop("model.safetensors")],
                         ids=["no key", "empty", "no config entry", "no weights entry"])
def test_a_missing_checksum_table_is_refused_unless_trusted(export, edit):
    weights = export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x40  # tampered weights that the table would have caught
    weights.write_bytes(bytes(data))
    edit_config(export, edit, reseal=False)
    with pytest.raises(ValueError, match="records no checksums|checksums lack"):
        load_pretrained(export)
    if "checksums" not in json.loads((export / "config.json").read_text()) or \
            not json.loads((export / "config.json").read_text())["checksums"]:
        assert load_pretrained(export, trust_unverified=True) is not None  # the explicit option


def test_trust_option_through_the_cli(export, tmp_path):
    edit_config(export, lambda m: m.pop("checksums"), reseal=False)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(frames / f"{k}.png")
    argv = ["predict", "--checkpoint", str(export), "--input", str(frames), "--num-frames", "1", "--steps", "2",
            "--out", str(tmp_path / "pred"), "--no-progress"]
    refused = stdiff_cli(*argv)
    assert refused.returncode == 2 and "records no checksums" in refused.stderr and "Traceback" not in refused.stderr
    trusted = stdiff_cli(*argv, "--trust-unverified")
    assert trusted.returncode == 0, trusted.stderr


@pytest.mark.parametrize("version", [99, 0, "2", None, True])
def test_unknown_format_versions_are_refused(export, version):
    edit_config(export, set_key("version", version))
    with pytest.raises(ValueError, match="format version .* this stdiff reads versions \\[1, 2\\]"):
        load_pretrained(export)


def test_version_1_folders_and_the_shipped_demo_still_load(export):
    def to_version_1(meta):
        meta["version"] = 1
        meta["checksums"].pop("config.json")
    edit_config(export, to_version_1, reseal=False)
    assert load_pretrained(export) is not None
    demo = json.loads((ROOT / "stdiff" / "demo_checkpoint" / "config.json").read_text())
    assert demo["version"] == 2 and set(demo["checksums"]) == {"config.json", "model.safetensors"}
    assert load_pretrained(ROOT / "stdiff" / "demo_checkpoint") is not None


# ---- items 4 and 10: weights of another precision, non-finite weights -------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_other_precision_weights_are_converted_at_load(tmp_path, dtype):
    model = micro_model()
    folder = save_pretrained(micro_model().to(dtype), tmp_path / "export")
    loaded = load_pretrained(folder)
    assert {t.dtype for t in loaded.state_dict().values() if t.is_floating_point()} == {torch.float32}
    expected = {k: v.to(dtype).float() for k, v in model.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    out = Predictor(loaded).predict(torch.rand(1, 3, 1, 16, 16), num_frames=1, seed=0, **FAST)
    assert out.frames.dtype == torch.float32 and torch.isfinite(out.frames).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, bad):
    model = micro_model()
    with torch.no_grad():
        model.unet.conv_in.weight[0, 0, 0, 0] = bad
    folder = save_pretrained(model, tmp_path / "export")
    with pytest.raises(ValueError, match=r"hold NaN or infinite values \(unet.conv_in.weight\)"):
        load_pretrained(folder)


# ---- item 8: symlink cycles in a training data folder ------------------------------------------------------
def test_symlink_cycles_in_a_data_folder_end_the_walk(tmp_path):
    root = tmp_path / "videos"
    (root / "v1").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "v1" / f"{k}.png")
    os.symlink("..", root / "v1" / "up")          # a cycle back to the root
    os.symlink("../v1", root / "v1" / "self")     # and one to its own folder
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "linked")  # a link out of the tree (no frames) is still followed
    code = ("import sys; from stdiff.data.folder import find_frame_folders; "
            "print([str(p) for p in find_frame_folders(sys.argv[1])])")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr([str(root / "v1")])


def test_training_checkpoints_of_unknown_versions_are_refused(tmp_path):
    from stdiff.training.state import load_state, save_state
    from test_training import _dummy_state

    folder = save_state(tmp_path, _dummy_state(1, 10))
    meta = json.loads((folder / "state.json").read_text())
    meta["version"] = 99
    (folder / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="state.json has format version 99; this stdiff reads version 1"):
        load_state(folder)
