"""``stdiff train``: train or resume an STDiff model (single process or under torchrun)."""
from __future__ import annotations

import argparse
import os

HELP = "train an STDiff model (e.g. --preset tiny --data synthetic --steps 2000 --out runs/x)"

# CLI flag -> TrainConfig field, for the flags that map one to one
_FLAGS: dict[str, tuple[str, type, str]] = {
    "--preset": ("preset", str, "model preset (tiny, smmnist64, kth64, bair64, cityscapes128, kitti128)"),
    "--data": ("data", str, "'synthetic', a recipe (kth, bair, smmnist, cityscapes, kitti; e.g. kth:/data/KTH), "
                            "or a video file / folder of videos / folder of frame folders"),
    "--data-root": ("data_root", str, "dataset folder for a recipe given without ':path'"),
    "--steps": ("steps", int, "total optimizer steps"),
    "--out": ("out", str, "output folder (checkpoints/, export/, logs/, previews/)"),
    "--batch-size": ("batch_size", int, "clips per process per micro-batch"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, "peak learning rate (AdamW, --lr-schedule with warm-up)"),
    "--lr-schedule": ("lr_schedule", str, "cosine (default: one half cosine to 0) or cosine_with_restarts (the "
                                          "official: --lr-cycles half cosines, each restarting at --lr)"),
    "--lr-cycles": ("lr_cycles", int, "half cosines of cosine_with_restarts (default 2, as the official training)"),
    "--warmup-steps": ("warmup_steps", int, "LR warm-up steps (default: 5%% of --steps, at most 500)"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N (under torchrun: each process's local GPU)"),
    "--workers": ("workers", int, "DataLoader worker processes per training process"),
    "--seed": ("seed", int, "seed of weights, data order and noise"),
    "--save-every": ("save_every", int, "steps between training checkpoints (0: only at the end)"),
    "--keep-last": ("keep_last", int, "training checkpoints to keep"),
    "--export-every": ("export_every", int, "steps between exports of the EMA model (0: only at the end)"),
    "--preview-every": ("preview_every", int, "steps between preview GIFs (0: none)"),
    "--log-every": ("log_every", int, "steps between log rows"),
}


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of training options (see TrainConfig)")
    for flag, (_, kind, text) in _FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", default=None,
                        help="train in the channels_last layout (faster convolutions on CPUs)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the loss of each step (pays after its 1-3 minutes of compiling)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue from the latest valid checkpoint in --out with its recorded settings (starts "
                             "fresh if there is none); only --steps (LR kept continuous) and run options may change")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any option, e.g. --set ema_max_decay=0.999 --set model.train_future_k=2")


def config_from_args(args: argparse.Namespace):
    """Defaults < --config file < explicit flags < --set overrides; returns a validated TrainConfig.

    With --resume the recorded settings of the newest checkpoint in --out replace the defaults:
    options not given keep their recorded values (a changed one is refused when training resumes,
    except --steps and the run options, see :mod:`stdiff.training.resume`).
    """
    from ..training.config import TrainConfig, apply_overrides, load_yaml
    from ..training.resume import recorded_settings

    data = load_yaml(args.config) if args.config else {}
    for field_name, _, _ in _FLAGS.values():
        value = getattr(args, field_name)
        if value is not None:
            data[field_name] = value
    for name in ("bf16", "channels_last", "compile", "resume"):
        if getattr(args, name):
            data[name] = True
    data = apply_overrides(data, args.set)
    if data.get("resume"):
        out = data.get("out", TrainConfig.out)
        recorded = recorded_settings(os.path.join(str(out), "checkpoints")) if isinstance(out, str) else None
        if recorded is not None:
            data = {**recorded, **data, "model": _merged(recorded.get("model", {}), data.get("model", {}))}
    return TrainConfig.from_dict(data)


def _merged(base: object, update: object) -> object:
    """``base`` updated recursively with the mapping ``update`` (non-mappings: ``update`` wins)."""
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    return {**base, **{k: _merged(base.get(k), v) if k in base else v for k, v in update.items()}}


def run(args: argparse.Namespace) -> int:
    """Train; on SIGTERM/SIGINT the checkpoint is saved and the exit code is 128 + the signal number."""
    import sys

    from ..training import train
    from ..training.signals import TrainingInterrupted

    try:
        result = train(config_from_args(args))
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"stdiff train: {exc}", file=sys.stderr)
        return exc.exit_code
    if os.environ.get("RANK", "0") == "0":
        print(f"trained to step {result.step}; model exported to {result.export_dir}")
    return 0
