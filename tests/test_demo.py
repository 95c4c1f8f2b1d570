"""``stdiff demo`` and ``stdiff predict`` end to end (tiny preset / micro model, few steps)."""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stdiff.checkpoint import save_pretrained
from stdiff.cli import build_parser
from stdiff.commands import demo
from stdiff.commands.predict import parse_times
from stdiff.data import SyntheticMovingDigits
from stdiff.dtypes import auto_dtype

from test_predictor import micro_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_command(name: str, argv: list[str]) -> int:
    """Through ``stdiff.cli`` when the command is registered there, else through its module."""
    from stdiff import cli

    if name in cli.COMMANDS:
        return cli.main([name, *argv])
    module = importlib.import_module(f"stdiff.commands.{name}")
    parser = argparse.ArgumentParser()
    module.build(parser)
    return module.run(parser.parse_args(argv))


def expect_error(name: str, argv: list[str], message: str, capsys) -> None:
    """The command fails on bad input: exit code 2 and the message through the CLI, else the exception."""
    from stdiff import cli

    if name in cli.COMMANDS:
        assert cli.main([name, *argv]) == 2
        assert re.search(message, capsys.readouterr().err)
    else:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            run_command(name, argv)


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "micro"
    save_pretrained(micro_model(), path)
    return path


def digits(num_frames: int, size: int = 16) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one synthetic moving-digits clip."""
    clip = SyntheticMovingDigits(num_videos=1, num_frames=num_frames, image_size=size, split="test")[0]
    return (clip[:, 0, :, :, None].expand(-1, -1, -1, 3) * 255).round().to(torch.uint8).numpy()


def check_demo_outputs(out, capsys) -> tuple[dict, str]:
    """The demo's files and printed table are complete; returns metrics.json and what was printed."""
    for name in ("prediction_1x.gif", "prediction_4x.gif", "grid_1x.png", "grid_4x.png"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    with Image.open(out / "prediction_4x.gif") as gif:  # one GIF frame per predicted frame at least
        assert gif.n_frames > 8
    one_x = metrics["model_1x"]
    assert 0 < one_x["psnr_mean"] <= one_x["psnr_best"] and -1 <= one_x["ssim_mean"] <= 1
    assert all(t["frames_per_second"] > 0 for t in metrics["timing"].values())
    assert metrics["timing"]["4x"]["predicted_frames"] == 4 * metrics["timing"]["1x"]["predicted_frames"]
    at_4x = metrics["at_4x_frame_rate"]
    for method in ("model", "copy_last", "blend"):
        assert set(at_4x[method]) == {"psnr_on_grid", "psnr_between", "ssim_on_grid", "ssim_between", "motion"}
    assert at_4x["copy_last"]["motion"] == 0
    printed = capsys.readouterr().out
    assert "PSNR grid" in printed and "between" in printed and "frames/s" in printed
    assert f"{at_4x['copy_last']['psnr_between']:.2f}" in printed.split("copy-last")[1]  # the baseline rows
    assert f"{at_4x['blend']['psnr_between']:.2f}" in printed.split("blend of 1x")[1]
    return metrics, printed


def test_demo_end_to_end(tmp_path, capsys):
    """The README's command on the shipped checkpoint (a short training when none is shipped)."""
    out = tmp_path / "demo"
    assert run_command("demo", ["--fast", "--steps", "2", "--videos", "1", "--out", str(out), "--no-progress",
                                "--train-steps", "3"]) == 0
    metrics, printed = check_demo_outputs(out, capsys)
    assert "sampler dpmpp, 2 steps, UNet in " in printed  # says which sampler, steps and dtype ran
    assert metrics["videos"] == 1 and metrics["samples"] == 2 and metrics["steps"] == 2
    assert metrics["sampler"] == "dpmpp" and metrics["dtype"] == str(auto_dtype("cpu").dtype).removeprefix("torch.")


def test_demo_defaults_to_the_fastest_sampler_within_two_percent_of_ddpm100():
    """The default comes from the demo-quality table: DPM-Solver++ 5 steps, within 2 % of DDPM-100."""
    args = build_parser().parse_args(["demo"])
    assert (args.sampler, args.steps, args.dtype) == ("dpmpp", 5, "auto")
    table = Path(__file__).parents[1] / "benchmarks" / "results" / "cpu-amd-epyc-2c" / "demo_quality.csv"
    rows = [r for r in csv.DictReader(table.open()) if r["method"] == "model" and r["dtype"] == "float32"]
    official = next(r for r in rows if (r["sampler"], r["steps"]) == ("ddpm", "100"))
    chosen = next(r for r in rows if (r["sampler"], r["steps"]) == ("dpmpp", "5"))
    for metric in ("psnr", "ssim"):
        assert float(chosen[metric]) >= 0.98 * float(official[metric])
    assert min(int(r["steps"]) for r in rows) == 5  # no setting in the table uses fewer UNet evaluations


def test_demo_trains_when_no_checkpoint_is_shipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "shipped_checkpoint", lambda: None)
    out = tmp_path / "demo"
    assert run_command("demo", ["--fast", "--steps", "1", "--videos", "1", "--samples", "1", "--out", str(out),
                                "--no-progress", "--train-steps", "2"]) == 0
    check_demo_outputs(out, capsys)
    assert (out / "train" / "export" / "config.json").is_file()


def test_predict_on_frame_folder(tmp_path, micro_checkpoint, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(digits(8)):
        Image.fromarray(frame).save(folder / f"{k}.png")
    out = tmp_path / "pred"
    assert run_command("predict", ["--checkpoint", str(micro_checkpoint), "--input", str(folder), "--num-frames",
                                   "4", "--fps", "2", "--samples", "2", "--sampler", "ddim", "--steps", "2",
                                   "--out", str(out), "--no-progress"]) == 0
    data = np.load(out / "prediction.npz")
    assert data["frames"].shape == (1, 2, 4, 1, 16, 16)
    assert data["times"].tolist() == [2.5, 3.0, 3.5, 4.0]
    assert len(list((out / "frames").glob("*.png"))) == 2 * 4
    assert (out / "prediction.gif").is_file() and (out / "grid.png").is_file()
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])   # ground truth at times 3 and 4
    assert scores["frames_scored"] == 2 and scores["psnr_best"] >= scores["psnr_mean"]


def test_predict_on_video_file(tmp_path, micro_checkpoint):
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for frame in digits(6, 32):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    out = tmp_path / "pred"
    assert run_command("predict", ["--checkpoint", str(micro_checkpoint), "--input", str(path), "--start", "1",
                                   "--context", "3", "--times", "2.5,3,4.25", "--steps", "2", "--out", str(out),
                                   "--no-progress"]) == 0
    data = np.load(out / "prediction.npz")
    assert data["frames"].shape == (1, 1, 3, 1, 16, 16) and data["times"].tolist() == [2.5, 3.0, 4.25]


def test_predict_errors(tmp_path, micro_checkpoint, capsys):
    with pytest.raises(ValueError, match="--times must be comma-separated numbers"):
        parse_times("4,x")
    args = ["--checkpoint", str(micro_checkpoint), "--out", str(tmp_path / "o"), "--no-progress"]
    expect_error("predict", [*args, "--input", str(tmp_path / "missing.mp4")], "--input", capsys)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(digits(4)):
        Image.fromarray(frame).save(folder / f"{k}.png")
    expect_error("predict", [*args, "--input", str(folder), "--times", "1.5"], "after the last observed", capsys)
    expect_error("demo", ["--videos", "0", "--out", str(tmp_path / "d")], "--videos must be >= 1", capsys)
