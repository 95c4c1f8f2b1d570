"""benchmarks/gpu/run.sh, the one-command GPU proof, on a machine without a GPU.

Its dry run must run every step as far as a CPU allows, skip the GPU-only parts with a reason,
and leave the summary and the two archives in $OUT. The driver's rules (a failing step never
stops the next one; a step past its share of the time is stopped and recorded as a timeout;
unused time goes to the next steps) are checked on stand-in steps.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "benchmarks" / "gpu" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about a minute on 2 idle cores: a dozen Python processes that import torch
def test_dry_run_runs_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    results_before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # set by conftest for Triton tests
    env.update(OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1", STDIFF_GPU_DRYRUN="1")
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    report = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, report

    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == [s.name for s in _driver().STEPS]
    assert summary["dry_run"] is True
    for name, step in steps.items():
        assert step["status"] in ("ok", "skipped"), (name, step)
        assert step["note"], f"step {name} has no note"
        assert step["status"] == "skipped" or step["rc"] == 0, (name, step)
    assert steps["build"]["status"] == "skipped" and "dry run" in steps["build"]["note"]
    assert steps["racecheck"]["status"] == "skipped" and "GPU" in steps["racecheck"]["note"]
    must_run = ("info", "tests", "memcheck", "bench_ops_float32", "bench_ops_bfloat16", "bench_sde", "bench_predict",
                "bench_report", "nccl_train", "nccl_check")
    assert [n for n in must_run if steps[n]["status"] != "ok"] == []
    assert "5 ops" in steps["memcheck"]["note"] and "0 failed" in steps["memcheck"]["note"]
    assert "tests collected" in steps["tests"]["note"]
    assert "two processes on one GPU" in steps["nccl_check"]["note"]
    markdown = (out / "summary.md").read_text()
    assert all(f"| {name}: " in markdown for name in steps)

    # $OUT holds only what comes back from the device: at most 8 files, no folders
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "results.tar.gz", "summary.json", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    folder = f"benchmarks/results/{Path(summary['results_dir']).name}"
    for csv_name in ("ops_float32.csv", "ops_bfloat16.csv", "sde.csv", "predict_tiny.csv", "README.md"):
        assert f"{folder}/{csv_name}" in names, names
    for dtype in ("float32", "bfloat16"):
        with tarfile.open(out / "results.tar.gz") as tar:
            ops = tar.extractfile(f"{folder}/ops_{dtype}.csv").read().decode().splitlines()
        assert {row.split(",")[ops[0].split(",").index("dtype")] for row in ops[1:]} == {dtype}
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {Path(n).name for n in tar.getnames()}
    assert {f"{i:02d}_{name}.log" for i, name in enumerate(steps, 1) if steps[name]["status"] == "ok"} <= logs
    # a dry run writes its results outside the repository
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == results_before


def test_a_failing_or_slow_step_does_not_stop_the_next(tmp_path, monkeypatch):
    run = _driver()

    def command(code: str):
        def step(ctx):
            rc = ctx.run([sys.executable, "-c", code])
            return run.outcome(rc, "fine")
        return step

    monkeypatch.setattr(run, "STEPS", (
        run.Step("fails", "exits 3", 1, command("import sys; print('ValueError: bad thing'); sys.exit(3)")),
        run.Step("hangs", "sleeps past its share", 1, command("import time; time.sleep(60)")),
        run.Step("raises", "a bug in a step", 1, lambda ctx: 1 / 0),
        run.Step("works", "exits 0", 20, command("print('hello')")),
    ))
    monkeypatch.setattr(run, "ALWAYS", ())
    monkeypatch.setenv("OUT", str(tmp_path))
    start = time.monotonic()
    assert run.main(["--dry-run"]) == 1
    assert time.monotonic() - start < 15  # "hangs" was stopped after about 2 s (its share and the unused one)

    steps = {s["name"]: s for s in json.loads((tmp_path / "summary.json").read_text())["steps"]}
    assert steps["fails"]["status"] == "failed" and steps["fails"]["rc"] == 3
    assert "ValueError: bad thing" in steps["fails"]["note"]
    assert steps["hangs"]["status"] == "timeout" and steps["hangs"]["rc"] == 124
    assert 1 < steps["hangs"]["timeout_s"] <= 2 and steps["hangs"]["wall_s"] < 10
    assert steps["raises"]["status"] == "failed" and "ZeroDivisionError" in steps["raises"]["note"]
    assert steps["works"]["status"] == "ok" and steps["works"]["note"] == "fine"
    assert (tmp_path / "summary.md").exists() and (tmp_path / "logs.tar.gz").exists()


def test_only_runs_the_named_steps_and_lists_the_others(tmp_path, monkeypatch):
    run = _driver()
    ran = []
    steps = tuple(run.Step(name, name, 5, lambda ctx, n=name: (ran.append(n), ("ok", 0, "ran"))[1])
                  for name in ("wheels", "a", "b"))
    monkeypatch.setattr(run, "STEPS", steps)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert run.main(["--dry-run", "--only", "b", "--cap", "b=7"]) == 0
    assert ran == ["wheels", "b"]  # wheels always runs: later steps need its PYTHONPATH
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("wheels", "ok"), ("a", "skipped"), ("b", "ok")]
    assert summary["steps"][1]["note"] == "not in --only"
    assert summary["budget_s"] == 12
    with pytest.raises(SystemExit):
        run.main(["--dry-run", "--cap", "nonsense=3"])


def test_the_steps_fit_the_device_time_and_keep_the_issue_order():
    run = _driver()
    assert sum(s.cap_s for s in run.STEPS) <= 9.5 * 60  # one re-run must fit in a 15-minute loan
    names = [s.name for s in run.STEPS]
    order = ["build", "tests", "memcheck", "racecheck", "bench_ops_float32", "bench_predict", "nccl_check"]
    assert sorted(order, key=names.index) == order
    assert names[-1] == "nccl_check" and len(set(names)) == len(names)
