"""The training loop: official STDiff objective, AdamW, cosine LR with warm-up, EMA, checkpoints.

SIGTERM / SIGINT stop training at the next step boundary (all ranks agree) after saving a
checkpoint, then :class:`.signals.TrainingInterrupted` is raised (see :mod:`.signals`).

Outputs under ``config.out``: ``checkpoints/step-XXXXXXX/`` (training state, see
:mod:`.state`), ``export/`` (config.json + model.safetensors with the EMA weights, loadable by
:func:`stdiff.checkpoint.load_pretrained`), ``logs/`` (CSV, TensorBoard), ``previews/`` (GIFs)
and ``train_config.yaml``. Runs single-process or under torchrun (see :mod:`.distributed`). Rank 0
holds the lock of ``config.out`` for the run (:func:`stdiff.fileio.folder_lock`); resuming follows
:mod:`.resume`.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import save_pretrained
from ..dtypes import auto_dtype
from ..fileio import atomic_write_text, check_output_dir, folder_lock
from ..models import STDiff
from .config import TrainConfig
from .distributed import (DistInfo, all_gather_object, barrier, broadcast_object, init_distributed,
                          max_over_ranks, mean_over_ranks, shutdown)
from .ema import EMA
from .logging import TrainLogger, save_preview
from .resume import LRPlan, resume_plan
from .schedule import cosine_with_warmup
from .signals import StopRequest, TrainingInterrupted, signal_name
from .state import (TrainingState, capture_rng, checkpoint_name, find_latest_valid, list_checkpoints,
                    load_state, prune_checkpoints, remove_partial, restore_rng, save_state)
from .stream import batch_stream

__all__ = ["train", "TrainResult", "cosine_with_warmup", "build_train_data"]


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank): the raw and EMA models and the loss history."""

    model: STDiff
    ema_model: STDiff
    step: int
    export_dir: Path
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of logged steps


class _LossModule(nn.Module):
    """Routes STDiff.training_loss through ``forward`` so DistributedDataParallel syncs gradients."""

    def __init__(self, model: STDiff) -> None:
        super().__init__()
        self.model = model

    def forward(self, observed: Tensor, future: Tensor, generator: torch.Generator) -> Tensor:
        return self.model.training_loss(observed, future, generator=generator)


def build_train_data(cfg: TrainConfig, split: str = "train", num_videos: int | None = None):
    """The clip dataset for ``cfg``'s data and model (To + Tp frames at the model's size/channels)."""
    from ..data import build_dataset

    mc = cfg.model_config()
    return build_dataset(
        cfg.data, split, image_size=mc.image_size, num_observed=mc.num_observed, num_future=mc.num_future,
        root=cfg.data_root, channels=mc.channels, frame_step=cfg.frame_step,
        num_videos=num_videos if num_videos is not None else cfg.num_videos, seed=cfg.seed,
        max_speed=cfg.data_speed,
    )


def _preview_clips(cfg: TrainConfig, train_set) -> Tensor:
    """Held-out clips for previews (the train set's first clips when there is no test split)."""
    try:
        data = build_train_data(cfg, "test", num_videos=cfg.preview_clips if cfg.data == "synthetic" else None)
    except (FileNotFoundError, ValueError) as exc:
        warnings.warn(f"previews use training clips (no test split: {exc})", RuntimeWarning, stacklevel=2)
        data = train_set
    count = min(cfg.preview_clips, len(data))
    return torch.stack([data[i] for i in range(count)])


def _init_weights(model: STDiff, path: str) -> None:
    """Start from the weights of the export at ``path`` (same parameter names and shapes)."""
    from ..checkpoint import load_pretrained

    source = load_pretrained(path).state_dict()
    target = model.state_dict()
    wrong = sorted(k for k in target if k not in source or source[k].shape != target[k].shape)
    if wrong or set(source) - set(target):
        raise ValueError(f"init_from {path!r} does not fit the model being trained: differing parameters "
                         f"{(wrong or sorted(set(source) - set(target)))[:5]}")
    model.load_state_dict(source)


def _check_out_dir(cfg: TrainConfig) -> None:
    check_output_dir(cfg.out_dir, "--out")
    if not cfg.resume and list_checkpoints(cfg.out_dir / "checkpoints"):
        raise ValueError(
            f"{str(cfg.out_dir)!r} already holds training checkpoints: pass --resume to continue, "
            "or choose another --out"
        )


class _Trainer:
    """State of one training process; :func:`train` drives it."""

    def __init__(self, cfg: TrainConfig, info: DistInfo) -> None:
        self.cfg, self.info = cfg, info
        self.model_config = cfg.model_config()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = STDiff(self.model_config).to(info.device)
        if cfg.init_from is not None and not (cfg.resume and list_checkpoints(cfg.out_dir / "checkpoints")):
            _init_weights(self.model, cfg.init_from)  # a resumed run takes its weights from the checkpoint
        self.ema = EMA(self.model, cfg.ema_max_decay, cfg.ema_power, cfg.ema_inv_gamma)
        if cfg.channels_last:  # after the EMA copy: the exported weights stay in the default layout
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        self.lr_plan = LRPlan(cfg.lr_schedule, cfg.warmup(), cfg.steps, cfg.lr_cycles)
        self.scheduler = self.lr_plan.scheduler(self.optimizer)
        self.resume_note = ""  # what a resume changed (logged)
        self.generator = torch.Generator(info.device).manual_seed(cfg.seed * 1_000_003 + info.rank)
        self.step = 0
        #: bfloat16 autocast of the step ("auto": where the device computes bfloat16 natively)
        self.bf16 = cfg.bf16 is True or (cfg.bf16 == "auto" and auto_dtype(info.device).dtype == torch.bfloat16)

    # ---- checkpoints --------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"world_size": self.info.world_size, "model_config": self.model_config.to_dict(),
                "train_config": self.cfg.to_dict(), "lr_plan": self.lr_plan.to_dict()}

    def save(self) -> Path | None:
        """Write a training checkpoint (rank 0; the RNG states of all ranks are gathered)."""
        rng = all_gather_object(capture_rng(self.generator), self.info)
        path = None
        if self.info.is_main:
            state = TrainingState(
                step=self.step, model=self.model.state_dict(), ema=self.ema.state_dict(),
                ema_updates=self.ema.num_updates, optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), rng=rng, meta=self.meta(),
            )
            root = self.cfg.out_dir / "checkpoints"
            path = save_state(root, state)
            prune_checkpoints(root, self.cfg.keep_last, upto=self.step)
        barrier(self.info)
        return path

    def export(self) -> Path | None:
        """Write the EMA model to ``<out>/export`` (rank 0)."""
        path = None
        if self.info.is_main:
            path = save_pretrained(self.ema.model, self.cfg.out_dir / "export",
                                   extra={"step": self.step, "ema_updates": self.ema.num_updates})
        barrier(self.info)
        return path

    def resume(self) -> bool:
        """Load the latest valid checkpoint chosen by rank 0; False when there is none.

        Raises ValueError (on every rank) when every checkpoint is corrupt."""
        root = self.cfg.out_dir / "checkpoints"
        state, error = None, None
        if self.info.is_main:
            remove_partial(root)
            try:
                state = find_latest_valid(root)
            except ValueError as exc:
                error = str(exc)
        path, error = broadcast_object((None if state is None else str(state.path), error), self.info)
        if error is not None:
            raise ValueError(error)
        if path is None:
            return False
        if state is None:
            state = load_state(path)
        self.load(state)
        return True

    def load(self, state: TrainingState) -> None:
        if state.meta.get("model_config") != self.model_config.to_dict():
            raise ValueError(f"checkpoint {str(state.path)!r} was trained with a different model config; "
                             "resume with the same preset and model overrides")
        self.lr_plan, self.resume_note = resume_plan(state, self.cfg)
        self.model.load_state_dict(state.model)
        self.ema.load_state_dict(state.ema, state.ema_updates)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler = self.lr_plan.scheduler(self.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.lr_plan.factor(state.step)  # continuous also when --steps changed
        self.step = state.step
        if len(state.rng) == self.info.world_size:
            restore_rng(state.rng[self.info.rank], self.generator)
        else:
            warnings.warn(f"checkpoint was written by {len(state.rng)} process(es), this run has "
                          f"{self.info.world_size}: RNG streams are re-seeded", RuntimeWarning, stacklevel=2)
            self.generator.manual_seed(self.cfg.seed * 1_000_003 + self.info.rank + 7919 * self.step)

    def loss_net(self) -> nn.Module:
        """The module whose ``forward(observed, future, generator)`` is the loss of :attr:`model`:
        wrapped in DistributedDataParallel under torchrun, compiled when ``cfg.compile``."""
        net: nn.Module = _LossModule(self.model)
        if self.info.distributed:
            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids,
                                          find_unused_parameters=self.model_config.sde.method == "ode")
        return torch.compile(net) if self.cfg.compile else net

    # ---- one optimizer step -------------------------------------------------------------------
    def train_step(self, net: nn.Module, batches) -> tuple[Tensor, Tensor, float]:
        """Forward/backward over ``grad_accum`` micro-batches, clip, step.

        Returns this rank's loss and the gradient norm as 0-d device tensors (no sync) and the LR used.
        """
        cfg, to = self.cfg, self.model_config.num_observed
        ddp = getattr(net, "_orig_mod", net)  # the module torch.compile wrapped, if it did
        total = torch.zeros((), device=self.info.device)
        for micro in range(cfg.grad_accum):
            clips = next(batches).to(self.info.device, non_blocking=True) * 2 - 1
            sync = micro == cfg.grad_accum - 1 or not isinstance(ddp, DistributedDataParallel)
            with (contextlib.nullcontext() if sync else ddp.no_sync()), \
                    torch.autocast(self.info.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = net(clips[:, :to], clips[:, to:], self.generator) / cfg.grad_accum
            loss.backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.step += 1
        return total, grad_norm, lr


def _due(step: int, every: int, last: int) -> bool:
    """True at every ``every``-th step (``every`` = 0: never) and always at the last step."""
    return step == last or (every > 0 and step % every == 0)


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) as ``cfg`` says; returns the final models on every rank."""
    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        with folder_lock(cfg.out_dir, "--out") if info.is_main else contextlib.nullcontext():
            return _train(cfg, info)
    finally:
        shutdown(info)


def _train(cfg: TrainConfig, info: DistInfo) -> TrainResult:
    out = cfg.out_dir
    if info.is_main:
        _check_out_dir(cfg)
    barrier(info)
    dataset = build_train_data(cfg)
    trainer = _Trainer(cfg, info)
    resumed = cfg.resume and trainer.resume()
    if trainer.step >= cfg.steps:
        raise ValueError(f"the checkpoint is at step {trainer.step}, not before --steps {cfg.steps}: "
                         "raise --steps to train longer")
    if info.is_main:
        atomic_write_text(out / "train_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    preview = _preview_clips(cfg, dataset) if cfg.preview_every and info.is_main else None
    batches = batch_stream(dataset, cfg.batch_size, cfg.seed, info.rank, info.world_size,
                           start=trainer.step * cfg.grad_accum, workers=cfg.workers,
                           pin_memory=info.device.type == "cuda")
    net = trainer.loss_net()
    logger = TrainLogger(out, cfg.steps, trainer.step, enabled=info.is_main)
    if cfg.resume:
        logger.write(f"resumed from step {trainer.step}" if resumed else "no checkpoint to resume: starting at step 0")
        if trainer.resume_note:
            logger.write(trainer.resume_note)
    clips_per_step = cfg.batch_size * cfg.grad_accum * info.world_size
    losses: list[tuple[int, float]] = []
    trainer.model.train()
    tick, ticked = time.perf_counter(), trainer.step
    window = torch.zeros(2, device=info.device)  # sums of loss and grad norm since the last log row
    saved = -1  # step of the last checkpoint written by this run
    try:
        with StopRequest() as stop:
            while trainer.step < cfg.steps:
                loss, grad_norm, lr = trainer.train_step(net, batches)
                window += torch.stack([loss, grad_norm.to(window.dtype)])
                logger.advance()
                step = trainer.step
                log = step % cfg.log_every == 0 or step == cfg.steps
                save, export = _due(step, cfg.save_every, cfg.steps), _due(step, cfg.export_every, cfg.steps)
                if log or save or export:  # the only host-device syncs: never write a diverged model
                    mean_loss, mean_norm = (mean_over_ranks(window, info) / (step - ticked)).tolist()
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(f"loss is {mean_loss} at step {step}; lower --lr or disable --bf16")
                if log:
                    now = time.perf_counter()
                    speed = clips_per_step * (step - ticked) / max(now - tick, 1e-9)
                    losses.append((step, mean_loss))
                    logger.log(step, mean_loss, lr, mean_norm, speed)
                    tick, ticked = now, step
                    window.zero_()
                if save:
                    trainer.save()
                    saved = step
                if export:
                    trainer.export()
                if preview is not None and _due(step, cfg.preview_every, cfg.steps):
                    save_preview(trainer.ema.model, preview, trainer.model_config.num_observed,
                                 out / "previews" / f"{checkpoint_name(step)}.gif", cfg.preview_sampler,
                                 cfg.preview_steps, cfg.seed)
                signum = max_over_ranks(stop.signum, info)  # every rank stops at the same step
                if signum:
                    if saved != step:
                        trainer.save()
                    logger.write(f"stopped by {signal_name(signum)} at step {step}: checkpoint saved")
                    raise TrainingInterrupted(signum, step, out / "checkpoints" / checkpoint_name(step))
    finally:
        logger.close()
    return TrainResult(trainer.model, trainer.ema.model, trainer.step, out / "export", losses)
