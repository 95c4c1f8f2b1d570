"""Benchmarks in CI smoke mode: every benchmark runs in seconds on CPU and writes complete rows.

Nothing here is about speed: the tests check that the scripts run, that their CSV rows carry
every column, that the two SDE solvers agree, and the helpers' arithmetic.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff.bench import common, predict, report, sde
from stdiff.bench.options import BENCHMARKS, OP_NAMES
from stdiff.commands import bench as bench_command
from stdiff.config import preset

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
# columns that may legitimately be empty on a CPU-only machine
MAY_BE_EMPTY = {"triton", "cuda", "cpu_isa", "bf16_peak_tflops", "pct_bf16_peak"}


def _bench(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    bench_command.build(parser)
    assert bench_command.run(parser.parse_args(list(argv))) == 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One smoke run of every benchmark through ``stdiff bench``, then the report.

    One intra-op thread: on a loaded 2-core CI machine, 2 OpenMP threads make these many small
    ops 5-10x slower (each parallel region waits for a descheduled thread).
    """
    out = tmp_path_factory.mktemp("bench")
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # every benchmark is installed: no source checkout needed
    torch.set_num_threads(1)
    try:
        for name in ("ops", "sde", "predict"):
            _bench(name, "--smoke", "--device", "cpu", "--out", str(out))
        _bench("report", "--smoke", "--device", "cpu", "--out", str(out))
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return out


def _check_rows(rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    assert rows
    for row in rows:
        assert tuple(row) == columns
        empty = [c for c in columns if row[c] == "" and c not in MAY_BE_EMPTY]
        assert not empty, f"empty columns {empty}"
        assert row["smoke"] == "True" and row["device"] == common.device_name(CPU)


def test_ops_smoke_rows(results):
    rows = common.read_csv(results / "ops.csv")
    assert rows and {r["op"] for r in rows} == set(OP_NAMES)
    for row in rows:
        assert not [c for c, v in row.items() if v == "" and c not in MAY_BE_EMPTY]
        assert float(row["median_ms"]) > 0 and float(row["copy_gbps"]) > 0


def test_sde_smoke_rows_and_agreement(results):
    rows = common.read_csv(results / "sde.csv")
    _check_rows(rows, sde.COLUMNS)
    assert {r["solver"] for r in rows} == {"torchsde", "stdiff"}
    for row in rows:
        assert float(row["max_abs_diff"]) <= 1e-4 * max(1.0, float(row["max_abs_state"]))
        assert float(row["median_ms"]) > 0 and int(row["repeats"]) == 1


def test_predict_smoke_rows(results):
    rows = common.read_csv(results / "predict_tiny.csv")
    _check_rows(rows, predict.COLUMNS)
    assert [r["variant"] for r in rows] == [v.name for v in predict.VARIANTS]
    assert rows[0]["speedup_vs_reference"] == "1.0" and rows[0]["spade_cache"] == "False"
    assert all(float(r["frames_per_s"]) > 0 and float(r["gflop"]) > 0 for r in rows)
    profile = common.read_csv(results / "predict_profile_tiny.csv")
    _check_rows(profile, predict.PROFILE_COLUMNS)
    for variant in predict.VARIANTS:
        shares = {r["component"]: float(r["share"]) for r in profile if r["variant"] == variant.name}
        assert tuple(shares) == predict.COMPONENTS
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-3)
        assert shares["unet"] > 0 and shares["sde"] > 0 and shares["spade"] > 0


def test_report_renders_tables_and_charts(results):
    text = (results / "README.md").read_text()
    assert "## Op microbenchmarks" in text and "## Motion-SDE solve vs torchsde" in text and "## Predictor" in text
    assert "| preset | batch | samples | frames | reference | fast | fast_bf16 | fast_bf16_dpmpp |" in text
    for chart in ("ops_speedup_float32.png", "ops_bandwidth_float32.png", "sde_speedup.png", "predict_fps.png",
                  "predict_shares.png"):
        assert (results / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({chart})" in text


def test_report_of_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="no benchmark CSVs"):
        report.render(tmp_path)
    with pytest.raises(FileNotFoundError):
        report.render(tmp_path / "missing")


def test_command_lists_benchmarks_and_rejects_unknown():
    parser = argparse.ArgumentParser()
    bench_command.build(parser)
    for name in BENCHMARKS:
        assert parser.parse_args([name, "--smoke"]).benchmark == name
    assert parser.parse_args(["ops", "--smoke", "--dtypes", "float32", "bfloat16"]).dtypes == ["float32", "bfloat16"]
    with pytest.raises(SystemExit):
        parser.parse_args(["nope"])


def test_ops_script_is_a_thin_entry_point():
    """benchmarks/ops.py only forwards to the installed stdiff.bench.ops (like the other scripts)."""
    from stdiff.bench import ops as ops_bench

    text = (ROOT / "benchmarks" / "ops.py").read_text()
    assert "from stdiff.bench.ops import main" in text and len(text.splitlines()) < 15
    assert set(ops_bench.VARIANTS) == set(OP_NAMES)


# ---- helpers -------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.001, 1e4), min_size=1, max_size=30))
def test_summarize_matches_torch_quantiles(samples):
    timing = common.summarize(samples)
    values = torch.tensor(samples, dtype=torch.float64)
    expected = torch.quantile(values, torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64))
    assert timing.repeats == len(samples)
    for value, ref in zip((timing.median_ms, timing.p20_ms, timing.p80_ms), expected.tolist()):
        assert math.isclose(value, ref, rel_tol=1e-9, abs_tol=1e-12)


def test_measure_copy_bandwidth_and_memory():
    calls = []
    timing = common.measure(lambda: calls.append(1), CPU, repeats=3, warmup=2)
    assert len(calls) == 5 and timing.repeats == 3 and timing.p20_ms <= timing.median_ms <= timing.p80_ms
    gbps, copy = common.copy_bandwidth(1 << 20, CPU, repeats=2, warmup=1)
    assert gbps > 0 and copy.repeats == 2
    assert common.measure(lambda: None, CPU, repeats=50, budget_s=0.0).repeats == 1
    common.reset_peak_memory(CPU)
    value, kind = common.peak_memory_mib(CPU)
    assert kind in ("cpu_rss_hwm", "unavailable") and (kind == "unavailable" or value > 0)
    with pytest.raises(ValueError, match="repeats"):
        common.measure(lambda: None, CPU, repeats=0)
    order = []
    timings = common.measure_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, CPU,
                                         repeats=2, warmup=1)
    assert order == ["a", "b"] * 3 and [t.repeats for t in timings.values()] == [2, 2]


def test_write_csv_requires_exact_columns(tmp_path):
    path = common.write_csv(tmp_path / "a.csv", [{"x": 1, "y": 2}], ("x", "y"))
    assert common.read_csv(path) == [{"x": "1", "y": "2"}]
    with pytest.raises(ValueError, match="missing \\['y'\\]"):
        common.write_csv(tmp_path / "b.csv", [{"x": 1}], ("x", "y"))
    with pytest.raises(ValueError, match="unexpected \\['z'\\]"):
        common.write_csv(tmp_path / "b.csv", [{"x": 1, "y": 2, "z": 3}], ("x", "y"))
    assert not (tmp_path / "b.csv").exists()


def test_device_helpers():
    assert common.resolve_device("cpu") == CPU
    assert common.device_slug(CPU).startswith("cpu-") and " " not in common.device_slug(CPU)
    assert common.auto_backend(CPU) in ("cpu", "reference")
    assert predict.bf16_peak_tflops(CPU) is None
    with pytest.raises(ValueError, match="device"):
        common.resolve_device("tpu")


def test_grid_brownian_returns_the_given_increments():
    grid = [0.0, 0.1, 0.2, 0.3]
    dw = torch.randn(3, 2, 5)
    bm = sde.GridBrownian(grid, dw)
    assert torch.equal(bm(0.1 - 1e-15, 0.2 + 1e-15), dw[1])  # float drift of accumulated times
    torch.testing.assert_close(bm(0.05, 0.25), 0.5 * dw[0] + dw[1] + 0.5 * dw[2])
    assert torch.equal(bm(0.3, 0.3 + 1e-16), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="dw must be"):
        sde.GridBrownian(grid, dw[:2])


def test_flop_count_is_linear_and_counts_the_spade_cache():
    cfg = preset("tiny")
    one = predict.count_gflop(cfg, 1, 1, 2, 3, spade_cache=True)
    encode, _, spade, _ = (f / 1e9 for f in predict._piece_flops(cfg.to_json()))
    # the context is encoded once per video, everything else runs per video and sample
    assert math.isclose(predict.count_gflop(cfg, 2, 3, 2, 3, spade_cache=True), 2 * encode + 6 * (one - encode),
                        rel_tol=1e-9)
    uncached = predict.count_gflop(cfg, 1, 1, 2, 3, spade_cache=False)
    assert math.isclose(uncached - one, 2 * (3 - 1) * spade, rel_tol=1e-9)
    with pytest.raises(ValueError, match="frames"):
        predict.count_gflop(cfg, 1, 1, cfg.num_future + 1, 3, spade_cache=True)


def test_exclusive_times_subtract_nested_labels():
    events = [("predict", 0, 100, 100.0), ("unet", 10, 50, 40.0), ("spade", 20, 30, 10.0),
              ("unet", 60, 90, 30.0), ("sde", 90, 95, 5.0)]
    totals = predict._exclusive_times(events)
    assert totals == {"predict": 25.0, "unet": 60.0, "spade": 10.0, "sde": 5.0}


def test_report_number_format_and_pivot():
    assert [report._fmt(v) for v in ("1234.7", "12.345", "1.2345", "0.12345", "0.00012", "64", "fast", "")] == [
        "1235", "12.3", "1.23", "0.123", "1.20e-04", "64", "fast", ""]
    rows = [{"n": "1", "solver": "a", "ms": "2.0"}, {"n": "1", "solver": "b", "ms": "1.0"},
            {"n": "8", "solver": "a", "ms": "9.0"}]
    table, columns = report._pivot(rows, ("n",), "solver", lambda r: r["ms"])
    assert columns == ["n", "a", "b"] and table == [{"n": "1", "a": "2.0", "b": "1.0"}, {"n": "8", "a": "9.0"}]
    assert report.markdown_table(table, columns).splitlines()[3] == "| 8 | 9.00 |  |"


def test_train_smoke_rows(tmp_path):
    """`stdiff bench train --smoke` with the agreed interface: one row per (preset, dtype, backend)."""
    from stdiff.bench import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _bench("train", "--smoke", "--presets", "tiny", "--dtypes", "float32", "bfloat16", "--backends", "fused",
               "reference", "--batch-size", "2", "--k", "1", "--steps", "1", "--device", "cpu", "--out", str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    rows = common.read_csv(tmp_path / "train.csv")
    _check_rows(rows, train.COLUMNS)
    assert [(r["dtype"], r["backend"]) for r in rows] == [("float32", "fused"), ("bfloat16", "fused"),
                                                          ("float32", "reference"), ("bfloat16", "reference")]
    for row in rows:
        assert (row["preset"], row["batch"], row["k"], row["repeats"]) == ("tiny", "2", "1", "1")
        assert math.isclose(float(row["clips_per_s"]), 2 * float(row["steps_per_s"]), rel_tol=1e-3)
        assert 0 < float(row["conv_share"]) < 1  # a UNet step spends time in convolutions, and not only there
    assert rows[2]["op_backend"] == "reference" and rows[0]["op_backend"] == common.auto_backend(CPU)
    with pytest.raises(ValueError, match="--k must be in"):
        train.run(CPU, tmp_path, ["tiny"], ["float32"], ["fused"], 1, 9, 1, smoke=True)


def test_train_step_is_the_training_loop_step():
    """The benchmarked step updates the weights as `stdiff train` does: same loss draws, same AdamW update."""
    from stdiff.bench.train import make_step
    from stdiff.models import STDiff
    from stdiff.training import TrainConfig
    from stdiff.training.loop import _LossModule, _Trainer
    from stdiff.training.distributed import DistInfo

    cfg = TrainConfig(preset="tiny", steps=10**9, batch_size=2, lr=1e-4, warmup_steps=0, device="cpu", seed=0,
                      lr_schedule="cosine")  # so long that the LR stays the base LR here
    trainer = _Trainer(cfg, DistInfo(rank=0, world_size=1, local_rank=0, device=CPU, owns_group=False))
    clips = torch.rand(2, 7, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(cfg.seed)
    model = STDiff(cfg.model_config())
    step = make_step(model, clips, k=model.config.train_future_k, bf16=False, seed=cfg.seed * 1_000_003)
    batches = iter([clips, clips])
    for _ in range(2):  # two steps: Adam's second update depends on the gradients' scale (clipping)
        step()
        trainer.train_step(_LossModule(trainer.model), batches)
    for (name, a), b in zip(trainer.model.named_parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
