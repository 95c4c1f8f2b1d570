"""The GPU proof in one command: build, GPU tests, compute-sanitizer, benchmarks, NCCL (issue 21).

    OUT=/path/to/out python3 benchmarks/gpu/run.py            # on the GPU machine (run.sh calls this)
    OUT=/tmp/x python3 benchmarks/gpu/run.py --dry-run        # here: no build, CPU stand-ins, GPU parts skipped

Every step runs, in order, whatever the previous ones did. Each has a share of the time (its cap);
a step ends at the latest when the caps up to and including its own are spent, so time a step
leaves unused goes to the next ones and the whole run takes at most the sum of the caps
(550 s: a re-run still fits in the device's 15 minutes). Each step's exit code, wall time,
status (ok, failed, timeout, skipped) and a one-line note go to ``$OUT/summary.json`` and
``$OUT/summary.md``, rewritten after every step. Logs go to ``$OUT/logs.tar.gz`` and the
benchmark CSVs (``benchmarks/results/<gpu-slug>/``) to ``$OUT/results.tar.gz``, both repacked
after every step, so ``$OUT`` never holds more than these four files and a command killed
from outside still leaves what it had. See benchmarks/gpu/README.md.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# ---- what runs (edit here) ---------------------------------------------------------------------
#: test files of the correctness step (globs; missing ones are ignored), and the keyword
#: expression that picks their GPU tests (-k also matches module names and markers: "gpu")
TEST_FILES = ["tests/test_op_*.py", "tests/test_ops_cuda.py", "tests/test_ops_triton.py", "tests/test_compile.py",
              "tests/test_noise_contract.py", "tests/test_predictor.py", "tests/test_sampling.py",
              "tests/test_motion_sde.py", "tests/test_noise.py"]
TEST_KEYWORDS = "cuda or triton or gpu or compile or noise_contract"
TEST_TIMEOUT_S = 120  # per test (pytest-timeout, where installed)
TEST_MAXFAIL = 5  # stop after this many failures: one failure does not hide the next few
OPS_ARGS = ["--presets", "kth64", "cityscapes128", "--batches", "1", "16", "--modes", "fwd", "fwd+bwd",
            "--repeats", "15", "--budget", "0.15"]
PREDICT_PRESET = "kth64"
TRAIN_ARGS = ["--presets", "kth64", "--dtypes", "float32", "bfloat16", "--backends", "fused", "reference"]
TRAIN_STEPS = 10
TRAIN_FLAGS = ("--presets", "--dtypes", "--backends", "--device", "--out", "--steps")
NCCL_PRESET = "kth64"
BUILD_ENV = {"MAX_JOBS": "16", "TORCH_CUDA_ARCH_LIST": "9.0"}  # the environment's own values win
WHEEL_DIR = ".whl"
NCCL_NOTE = "NCCL does not allow two processes on one GPU: 1 process only"


@dataclass
class Result:
    """What a step did: status ok | failed | timeout | skipped, the last exit code, a one-line note."""

    name: str
    title: str
    status: str = "skipped"
    rc: int | None = None
    wall_s: float = 0.0
    timeout_s: float = 0.0
    note: str = ""


@dataclass
class Context:
    """Where things go and how commands run; ``env`` is passed to every command."""

    out: Path
    work: Path
    results_root: Path
    python: str
    dry_run: bool
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    deadline: float = 0.0  # of the step now running (time.monotonic)
    slug: str = ""
    log: Path = Path()
    error: str = ""  # the last output line of the step's last failed command

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def results(self) -> Path:
        return self.results_root / (self.slug or "unknown-device")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        with open(self.log, "a") as fh:
            fh.write(text.rstrip("\n") + "\n")

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> int:
        """Run ``cmd`` in the repository root, output appended to the step's log; 124 on timeout."""
        if self.left() <= 0:
            self.say(f"$ {shlex.join(cmd)}\nnot started: the step's time is spent")
            return 124
        self.say(f"$ {shlex.join(cmd)}  (timeout {self.left():.0f} s)")
        with open(self.log, "a") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=self.left())
            except subprocess.TimeoutExpired:
                rc = 124
                stop(proc)
        self.say(f"exit code {rc}" + (" (timed out)" if rc == 124 else ""))
        if rc != 0:
            self.error = last_output_line(self.log)
        return rc

    def capture(self, cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Like :meth:`run`, also returning the output."""
        start = self.log.stat().st_size if self.log.exists() else 0
        rc = self.run(cmd, env)
        with open(self.log) as fh:
            fh.seek(start)
            return rc, fh.read()

    def stdiff(self, *args: str) -> list[str]:
        return [self.python, "-m", "stdiff", *args]


def stop(proc: subprocess.Popen) -> None:
    """End a command this script started, with its children (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def outcome(rc: int, ok_note: str, fail_note: str = "") -> tuple[str, int, str]:
    if rc == 0:
        return "ok", rc, ok_note
    return ("timeout" if rc == 124 else "failed"), rc, fail_note or f"exit code {rc}"


def last_line(text: str, pattern: str) -> str:
    """The last line of ``text`` matching ``pattern`` (regex), stripped, or ""."""
    lines = [ln.strip() for ln in text.splitlines() if re.search(pattern, ln)]
    return lines[-1] if lines else ""


def last_output_line(log: Path) -> str:
    """What a failed command said last in ``log``: its last exception line (e.g. a worker's under
    torchrun, whose own report follows it), else its last line with a letter in it."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()[-300:]]
    lines = [ln for ln in lines if re.search(r"[A-Za-z]", ln) and not ln.startswith(("$ ", "exit code "))]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln) and "ChildFailed" not in ln]
    return (errors or lines or [""])[-1][:300]


def csv_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def bench_outcome(rc: int, files: list[Path]) -> tuple[str, int, str]:
    rows = ", ".join(f"{p.name}: {csv_rows(p)} rows" for p in files if p.exists()) or "no CSV written"
    if rc == 124:
        return "timeout", rc, f"timed out; kept {rows}"
    return outcome(rc, rows, f"exit code {rc}; {rows}")


# ---- the steps ----------------------------------------------------------------------------------
def step_wheels(ctx: Context) -> tuple[str, int | None, str]:
    wheels = sorted(glob.glob(str(ROOT / WHEEL_DIR / "*.whl")))
    if not wheels:
        where = f"no {WHEEL_DIR}/*.whl: carry the wheels (benchmarks/gpu/README.md)"
        return ("skipped", None, f"dry run: {where}; using the installed packages") if ctx.dry_run \
            else ("failed", None, where)
    site = ctx.work / "site"
    rc = ctx.run([ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                  "--target", str(site), *wheels])
    if rc != 0:
        return outcome(rc, "")
    names = ", ".join(Path(w).name.split("-")[0] for w in wheels)
    env = {**ctx.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), ctx.env.get("PYTHONPATH")]))}
    rc = ctx.run([ctx.python, "-c", "import torchsde, trampoline"], env)
    if rc != 0:
        return outcome(rc, "", f"installed {names}; importing torchsde: exit code {rc}")
    if ctx.dry_run:
        return "ok", 0, f"dry run: {names} install and import here; not put on PYTHONPATH"
    ctx.env = env
    return "ok", 0, f"{names} on PYTHONPATH"


def step_build(ctx: Context) -> tuple[str, int | None, str]:
    if ctx.dry_run:
        return "skipped", None, "dry run: no CUDA build here; using the installed package"
    env = {**BUILD_ENV, **ctx.env}
    ctx.say("build environment: " + " ".join(f"{k}={env[k]}" for k in BUILD_ENV))
    rc = ctx.run([ctx.python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."], env)
    info_path = ROOT / "stdiff" / "_C_build.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    built = f"cuda_built={info.get('cuda_built')}, arch {info.get('cuda_arch_list')}, torch {info.get('torch')}"
    if rc == 0 and not info.get("cuda_built"):
        return "failed", rc, f"installed without the CUDA library ({built})"
    return outcome(rc, built)


def step_info(ctx: Context) -> tuple[str, int | None, str]:
    rc, text = ctx.capture(ctx.stdiff("info", "--json"))
    if rc != 0:
        return outcome(rc, "")
    info = json.loads(text[text.index("{"): text.rindex("}") + 1])
    backends = info.get("backends", {})
    usable = {name: backends.get(name, {}).get("available", False) for name in ("cuda", "triton")}
    detail = "; ".join(f"{n}: {'yes' if ok else 'NO'} ({backends.get(n, {}).get('detail', 'not listed')})"
                       for n, ok in usable.items())
    _, slug_text = ctx.capture([ctx.python, "-c", (
        "import torch; from stdiff.bench.common import device_slug; "
        f"print('slug=' + device_slug(torch.device({ctx.device!r})))")])
    ctx.slug = last_line(slug_text, r"^slug=").removeprefix("slug=") or ctx.slug
    versions = f"torch {info.get('torch')}, triton {info.get('triton')}, devices {info.get('devices')}"
    if ctx.dry_run:
        return "ok", 0, f"dry run (cuda and triton not required): {detail}; {versions}"
    if not all(usable.values()):
        return "failed", 1, f"cuda and triton must both be usable: {detail}"
    return "ok", 0, f"{detail}; {versions}"


def selected_test_files() -> list[str]:
    found: list[str] = []
    for pattern in TEST_FILES:
        found += [str(Path(p).relative_to(ROOT)) for p in sorted(ROOT.glob(pattern))]
    return list(dict.fromkeys(found))


def step_tests(ctx: Context) -> tuple[str, int | None, str]:
    files = selected_test_files()
    cmd = [ctx.python, "-m", "pytest", "-p", "no:cacheprovider", "-k", TEST_KEYWORDS, *files]
    if ctx.dry_run:
        rc, text = ctx.capture(cmd + ["--collect-only", "-q"])
        count = last_line(text, r"tests? collected|selected")
        return outcome(rc, f"dry run: {count or '?'} (not run: they need the GPU); files {' '.join(files)}")
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec('pytest_timeout') is None)"
    has_timeout = ctx.run([ctx.python, "-c", probe]) == 0
    cmd += ["-q", "-rfEs", f"--maxfail={TEST_MAXFAIL}", "--durations=15",
            f"--junitxml={ctx.log.with_suffix('.xml')}"]
    if has_timeout:
        cmd.append(f"--timeout={TEST_TIMEOUT_S}")
    rc, text = ctx.capture(cmd)
    tally = last_line(text, r"\d+ (passed|failed|error)") or last_line(text, r"no tests ran")
    extra = "" if has_timeout else "; pytest-timeout not installed: only the step timeout bounds a test"
    return outcome(rc, tally + extra, (tally or f"exit code {rc}") + extra)


def sanitizer_path(ctx: Context) -> str | None:
    cuda_home = ctx.env.get("CUDA_HOME") or "/usr/local/cuda"
    for candidate in (shutil.which("compute-sanitizer", path=ctx.env.get("PATH")),
                      f"{cuda_home}/bin/compute-sanitizer", f"{cuda_home}/compute-sanitizer/compute-sanitizer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def sanitize(tool: str) -> Callable[[Context], tuple[str, int | None, str]]:
    def step(ctx: Context) -> tuple[str, int | None, str]:
        program = [ctx.python, "benchmarks/gpu/sanitize_ops.py"]
        if ctx.dry_run:
            if tool != "memcheck":
                return "skipped", None, "dry run: compute-sanitizer needs a GPU (the program ran in the memcheck step)"
            rc, text = ctx.capture(program + ["--device", "cpu", "--backends", "cpu"])
            calls = last_line(text, r"forward\+backward calls")
            return outcome(rc, f"dry run: compute-sanitizer not run (no GPU); on the cpu backend: {calls}")
        sanitizer = sanitizer_path(ctx)
        if sanitizer is None:
            return "failed", None, "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)"
        # every tensor its own cudaMalloc: an access past a tensor is then past an allocation
        env = {**ctx.env, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
        rc, text = ctx.capture([sanitizer, "--tool", tool, "--error-exitcode", "86", *program], env)
        summary = last_line(text, r"(ERROR|RACECHECK) SUMMARY")
        calls = last_line(text, r"forward\+backward calls")
        note = "; ".join(filter(None, [summary, calls]))
        return outcome(rc, note, (f"sanitizer found errors: {note}" if rc == 86 else f"exit code {rc}: {note}"))
    return step


def bench_ops(dtype: str) -> Callable[[Context], tuple[str, int | None, str]]:
    """One dtype's op benchmark, kept as ops_<dtype>.csv (``stdiff bench report`` reads ops*.csv)."""
    def step(ctx: Context) -> tuple[str, int | None, str]:
        out = ctx.work / f"ops_{dtype}"
        cmd = ctx.stdiff("bench", "ops", "--device", ctx.device, "--dtypes", dtype, *OPS_ARGS, "--out", str(out))
        rc = ctx.run(cmd + (["--smoke"] if ctx.dry_run else []))
        kept = ctx.results / f"ops_{dtype}.csv"
        written = (out / "ops.csv").exists()  # only at the end of the run: none after a timeout
        if written:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "ops.csv", kept.with_suffix(".tmp"))
            os.replace(kept.with_suffix(".tmp"), kept)
        status, rc, note = bench_outcome(rc, [kept] if written else [])
        return status, rc, note + (" (dry run: --smoke on cpu)" if ctx.dry_run else "")
    return step


def step_sde(ctx: Context) -> tuple[str, int | None, str]:
    cmd = ctx.stdiff("bench", "sde", "--device", ctx.device, "--out", str(ctx.results))
    rc = ctx.run(cmd + (["--smoke"] if ctx.dry_run else []))
    status, rc, note = bench_outcome(rc, [ctx.results / "sde.csv"])
    return status, rc, note + (" (dry run: --smoke on cpu)" if ctx.dry_run else "")


def step_predict(ctx: Context) -> tuple[str, int | None, str]:
    cmd = ctx.stdiff("bench", "predict", "--device", ctx.device, "--out", str(ctx.results))
    # the smoke plan has only the tiny preset
    rc = ctx.run(cmd + (["--smoke"] if ctx.dry_run else ["--preset", PREDICT_PRESET]))
    preset = "tiny" if ctx.dry_run else PREDICT_PRESET
    files = [ctx.results / f"predict_{preset}.csv", ctx.results / f"predict_profile_{preset}.csv"]
    status, rc, note = bench_outcome(rc, files)
    return status, rc, note + (" (dry run: --smoke on cpu)" if ctx.dry_run else "")


def step_train(ctx: Context) -> tuple[str, int | None, str]:
    rc, text = ctx.capture(ctx.stdiff("bench", "train", "--help"))
    if rc != 0:
        return "skipped", None, "`stdiff bench train --help` fails: this version has no training benchmark (issue 23)"
    missing = [flag for flag in TRAIN_FLAGS if flag not in text and flag != "--steps"]
    if missing:
        return "failed", None, f"`stdiff bench train` lacks the options {missing}"
    before = set(ctx.results.glob("*.csv"))
    if ctx.dry_run:
        cmd = ctx.stdiff("bench", "train", "--smoke", "--device", "cpu", "--out", str(ctx.results))
    else:
        steps = ["--steps", str(TRAIN_STEPS)] if "--steps" in text else []
        cmd = ctx.stdiff("bench", "train", *TRAIN_ARGS, *steps, "--device", "cuda", "--out", str(ctx.results))
    start = time.time()
    rc = ctx.run(cmd)
    files = sorted(p for p in ctx.results.glob("*.csv") if p not in before or p.stat().st_mtime >= start)
    status, rc, note = bench_outcome(rc, files)
    return status, rc, note + (" (dry run: --smoke on cpu)" if ctx.dry_run else "")


def step_report(ctx: Context) -> tuple[str, int | None, str]:
    if not any(ctx.results.glob("*.csv")):
        return "skipped", None, "no benchmark CSV to report on"
    rc = ctx.run(ctx.stdiff("bench", "report", "--device", "cpu", "--out", str(ctx.results)))
    made = sorted(p.name for p in ctx.results.glob("*") if p.suffix in (".md", ".png"))
    return outcome(rc, f"wrote {', '.join(made)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "torch.distributed.run", "--nproc-per-node=1", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}"]


def step_nccl_train(ctx: Context) -> tuple[str, int | None, str]:
    preset, steps, batch = ("tiny", "1", "1") if ctx.dry_run else (NCCL_PRESET, "2", "2")
    cmd = torchrun(ctx) + ["-m", "stdiff", "train", "--preset", preset, "--data", "synthetic", "--steps", steps,
                           "--batch-size", batch, "--device", ctx.device, "--workers", "0", "--save-every", "0",
                           "--export-every", "0", "--preview-every", "0", "--log-every", "1",
                           "--set", "num_videos=8", "--out", str(ctx.work / "nccl_train")]
    rc, text = ctx.capture(cmd)
    done = last_line(text, r"trained to step").split(";")[0]
    why = ("WORLD_SIZE=1: stdiff starts no process group for one process, so this step runs no NCCL "
           "collective (nccl_check does)")
    return outcome(rc, f"{done}; {why}; {NCCL_NOTE}" + (" (dry run: tiny on cpu)" if ctx.dry_run else ""),
                   f"exit code {rc}; {NCCL_NOTE}")


def step_nccl_check(ctx: Context) -> tuple[str, int | None, str]:
    preset = "tiny" if ctx.dry_run else NCCL_PRESET
    cmd = torchrun(ctx) + ["benchmarks/gpu/nccl_check.py", "--device", ctx.device, "--preset", preset]
    rc, text = ctx.capture(cmd)
    line = last_line(text, r"world size")
    return outcome(rc, f"{line}; {NCCL_NOTE}" + (" (dry run: gloo on cpu)" if ctx.dry_run else ""),
                   f"exit code {rc}" + (f": {line}" if line else ""))


@dataclass(frozen=True)
class Step:
    """A step: ``cap_s`` its share of the run's time (seconds); ``run`` returns (status, rc, note)."""

    name: str
    title: str
    cap_s: float
    run: Callable[[Context], tuple[str, int | None, str]]


#: in run order; the caps add up to 550 s (9 min 10 s) on the H200
STEPS: tuple[Step, ...] = (
    Step("wheels", f"install the carried wheels ({WHEEL_DIR}/) onto PYTHONPATH", 20, step_wheels),
    Step("build", "pip install --no-build-isolation --no-deps -e . (MAX_JOBS=16, sm_90)", 140, step_build),
    Step("info", "stdiff info: cuda and triton usable", 15, step_info),
    Step("tests", f"pytest -k '{TEST_KEYWORDS}' on the GPU", 100, step_tests),
    Step("memcheck", "compute-sanitizer --tool memcheck on every CUDA op, fwd+bwd", 25, sanitize("memcheck")),
    Step("racecheck", "compute-sanitizer --tool racecheck on every CUDA op, fwd+bwd", 25, sanitize("racecheck")),
    Step("bench_ops_float32", "stdiff bench ops --dtypes float32", 45, bench_ops("float32")),
    Step("bench_ops_bfloat16", "stdiff bench ops --dtypes bfloat16", 35, bench_ops("bfloat16")),
    Step("bench_sde", "stdiff bench sde (vs torchsde)", 20, step_sde),
    Step("bench_predict", f"stdiff bench predict --preset {PREDICT_PRESET}", 55, step_predict),
    Step("bench_train", "stdiff bench train (kth64, fp32/bf16, fused/reference)", 25, step_train),
    Step("bench_report", "stdiff bench report: README.md tables and PNG charts of the CSVs", 10, step_report),
    Step("nccl_train", "torchrun --nproc-per-node=1 -m stdiff train (2 steps)", 25, step_nccl_train),
    Step("nccl_check", "torchrun --nproc-per-node=1 nccl_check.py (NCCL collectives, DDP step)", 10, step_nccl_check),
)
ALWAYS = ("wheels",)  # run even when --only leaves them out: later steps need their PYTHONPATH


# ---- summary and packing ------------------------------------------------------------------------
def machine(ctx: Context) -> dict[str, str]:
    """What ran: GPU (nvidia-smi), Python, CPU count, git commit where this copy has one."""
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {
        "gpu": out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]) or "none",
        "python": f"{platform.python_version()} ({ctx.python})",
        "cpus": str(os.cpu_count()),
        "commit": out(["git", "rev-parse", "--short", "HEAD"]) or "unknown (no git here)",
        "host": platform.node(),
    }


def write_summary(ctx: Context, results: list[Result], info: dict, started: float) -> None:
    data = {**info, "dry_run": ctx.dry_run, "total_s": round(time.monotonic() - started, 1),
            "results_dir": f"benchmarks/results/{ctx.results.name}", "steps": [asdict(r) for r in results]}
    atomic_write(ctx.out / "summary.json", json.dumps(data, indent=1) + "\n")
    lines = [f"# GPU run summary{' (DRY RUN)' if ctx.dry_run else ''}", "",
             f"{info['started']}, {data['total_s']} s of at most {info['budget_s']:.0f} s. "
             f"GPU: {info['machine']['gpu']}. Python {info['machine']['python']}, {info['machine']['cpus']} CPUs, "
             f"commit {info['machine']['commit']}.", "",
             "| # | step | status | exit | wall s | timeout s | note |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        note = r.note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {i} | {r.name}: {r.title} | {r.status} | {'' if r.rc is None else r.rc} | {r.wall_s} "
                     f"| {r.timeout_s:.0f} | {note} |")
    lines += ["", "Logs: logs.tar.gz (one NN_step.log per step; the tests' JUnit XML beside theirs). "
              f"CSVs: results.tar.gz (extract at the repository root: benchmarks/results/{ctx.results.name}/)."]
    atomic_write(ctx.out / "summary.md", "\n".join(lines) + "\n")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def pack(ctx: Context, logs: Path) -> None:
    """$OUT/logs.tar.gz (the logs folder) and $OUT/results.tar.gz (benchmarks/results/<slug>/)."""
    for name, folder, arcname in (("logs.tar.gz", logs, "logs"),
                                  ("results.tar.gz", ctx.results, f"benchmarks/results/{ctx.results.name}")):
        if not folder.is_dir():
            continue
        tmp = ctx.out / (name + ".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(folder, arcname=arcname)
        os.replace(tmp, ctx.out / name)


def run_step(step: Step, result: Result, ctx: Context, seconds: float) -> None:
    """Run ``step`` within ``seconds`` into ``result`` (an exception in a step is its failure)."""
    result.timeout_s = round(max(0.0, seconds), 1)
    if result.timeout_s < min(3.0, step.cap_s / 2):
        result.note = f"no time left: earlier steps used {step.name}'s share"
        return
    ctx.deadline = time.monotonic() + result.timeout_s
    ctx.error = ""
    t0 = time.monotonic()
    try:
        result.status, result.rc, result.note = step.run(ctx)
    except Exception as exc:  # a bug in this script's step: record it and go on
        result.status, result.note = "failed", f"run.py error: {type(exc).__name__}: {exc}"
        ctx.say(result.note)
    result.wall_s = round(time.monotonic() - t0, 1)
    if result.status in ("failed", "timeout") and ctx.error and ctx.error not in result.note:
        result.note += f"; last output: {ctx.error}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("STDIFF_GPU_DRYRUN", "") == "1",
                        help="no GPU: skip the build, run CPU stand-ins (default: $STDIFF_GPU_DRYRUN=1)")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], default=None,
                        help="run only these steps (the others are listed as skipped)")
    parser.add_argument("--cap", action="append", default=[], metavar="STEP=SECONDS",
                        help="change one step's share of the time (repeatable)")
    parser.add_argument("--results-root", default=None,
                        help="folder of <slug>/ results (default benchmarks/results; dry run: a temporary folder)")
    args = parser.parse_args(argv)
    out_env = os.environ.get("OUT")
    if not out_env:
        parser.error("set OUT to the folder that receives the summary and the archives")
    caps = {}
    for item in args.cap:
        name, _, seconds = item.partition("=")
        if name not in {s.name for s in STEPS} or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--cap must be STEP=SECONDS with STEP in {[s.name for s in STEPS]}, got {item!r}")
        caps[name] = float(seconds)

    out = Path(out_env).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stdiff-gpu-"))
    results_root = Path(args.results_root) if args.results_root else (
        work / "results" if args.dry_run else ROOT / "benchmarks" / "results")
    python = os.environ.get("PYTHON") or sys.executable
    ctx = Context(out=out, work=work, results_root=results_root.resolve(), python=python, dry_run=args.dry_run)
    ctx.env["PYTHONUNBUFFERED"] = "1"
    logs = work / "logs"
    logs.mkdir()
    selected = [s for s in STEPS if args.only is None or s.name in args.only or s.name in ALWAYS]
    budget = sum(caps.get(s.name, s.cap_s) for s in selected)
    info = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget, "machine": machine(ctx), "command": shlex.join([sys.argv[0], *(argv or sys.argv[1:])])}
    started = planned_end = time.monotonic()
    print(f"stdiff GPU run{' (dry run)' if ctx.dry_run else ''}: {len(selected)} steps, at most {budget:.0f} s, "
          f"summary in {out}", flush=True)
    results = [Result(s.name, s.title, note="" if s in selected else "not in --only") for s in STEPS]
    for i, (step, result) in enumerate(zip(STEPS, results)):
        if step in selected:
            ctx.log = logs / f"{i + 1:02d}_{step.name}.log"
            planned_end += caps.get(step.name, step.cap_s)
            run_step(step, result, ctx, planned_end - time.monotonic())
            write_summary(ctx, results, info, started)
            pack(ctx, logs)
        print(f"[{i + 1:2d}/{len(STEPS)}] {step.name:18s} {result.status:8s} {result.wall_s:6.1f} s  {result.note}",
              flush=True)
    write_summary(ctx, results, info, started)
    failed = [r.name for r in results if r.status in ("failed", "timeout")]
    print(f"done in {time.monotonic() - started:.0f} s; "
          f"{'failed: ' + ', '.join(failed) if failed else 'no step failed'}; files: "
          f"{', '.join(sorted(p.name for p in out.iterdir()))}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
