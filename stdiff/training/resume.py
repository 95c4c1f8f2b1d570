"""Resume rules: a resumed run keeps its recorded settings; more (or fewer) steps keep the LR continuous.

- ``stdiff train --resume`` starts from the training settings recorded in the newest checkpoint
  (:func:`recorded_settings`), not from the defaults; flags given on the command line apply on top.
- :func:`settings_changes` compares what a run asks with what the checkpoint recorded. Only the
  fields of :data:`RUN_FIELDS` (where the output goes, how often to log/save/preview, the device,
  data-loader workers, the weight layout and compilation) and ``steps`` may differ; any other
  difference (batch size, LR, seed, data, schedule, ...) is refused with the list of changes.
- A different ``steps`` (beyond the checkpoint's step) is a deliberate extension, logged, and the
  learning rate stays continuous (:class:`LRPlan`): from the LR at the checkpoint it decays along a
  half cosine to 0 at the new last step; when the recorded schedule had already decayed below
  :data:`RESTART_BELOW` of the peak (a finished run), it first warms up again linearly from there
  to the peak over the warm-up length, then decays.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schedule import make_schedule

__all__ = ["RUN_FIELDS", "RESTART_BELOW", "LRPlan", "recorded_settings", "settings_changes", "resume_plan"]

#: Training settings that may differ on resume: they change neither the data order nor the weights (the
#: layout and compilation only up to float rounding; checkpoints written before those options existed
#: resume as well).
RUN_FIELDS = ("out", "resume", "device", "workers", "save_every", "keep_last", "export_every", "log_every",
              "preview_every", "preview_clips", "preview_sampler", "preview_steps", "channels_last", "compile")
#: An extension whose LR at the checkpoint is below this fraction of the peak warms up again.
RESTART_BELOW = 0.1


def recorded_settings(root: str | Path) -> dict[str, Any] | None:
    """The training config recorded by the newest checkpoint under ``root`` whose state.json reads
    (None when there is none). The checkpoint is fully verified later, when it is loaded."""
    from .state import list_checkpoints

    for path in reversed(list_checkpoints(root)):
        try:
            meta = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("train_config"), dict):
            return meta["train_config"]
    return None


def settings_changes(recorded: dict[str, Any], asked: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded, asked)}`` for every training setting that differs, RUN_FIELDS excluded, and
    ``preset``/``model`` too: the model they make is compared as a whole (a resumed model must be the same)."""
    keys = (set(recorded) | set(asked)) - set(RUN_FIELDS) - {"preset", "model"}
    return {k: (recorded.get(k), asked.get(k)) for k in sorted(keys)
            if _normal(recorded.get(k)) != _normal(asked.get(k))}


def _normal(value: Any) -> Any:
    """Tuples as lists (YAML/JSON round trips), for comparison."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


@dataclass
class LRPlan:
    """The LR multiplier at every step: the configured schedule up to the first extension, then
    one segment per extension ``[start, start_factor, total, warmup, peak]`` (see the module doc)."""

    schedule: str
    warmup: int
    total: int
    cycles: int
    extensions: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1.0)
        self._base = make_schedule(self.schedule, optimizer, self.warmup, self.total, self.cycles).lr_lambdas[0]

    def factor(self, step: int) -> float:
        """The LR multiplier used by the optimizer step that follows ``step`` completed steps."""
        for start, start_factor, total, warmup, peak in reversed(self.extensions):
            if step >= start:
                if step < start + warmup:
                    return start_factor + (peak - start_factor) * (step - start) / warmup
                progress = min(1.0, (step - start - warmup) / max(1, total - start - warmup))
                return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self._base(step)

    def extend(self, step: int, total: int, warmup: int) -> list[float]:
        """Continue from ``step`` to ``total`` steps (continuous LR); returns the new segment."""
        start_factor = self.factor(step)
        restart = start_factor < RESTART_BELOW
        ramp = max(1, min(warmup, (total - step) // 2)) if restart else 0
        segment = [step, start_factor, total, ramp, 1.0 if restart else start_factor]
        self.extensions.append(segment)
        return segment

    def scheduler(self, optimizer):
        """A LambdaLR following this plan (state restored by the caller)."""
        import torch

        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "warmup": self.warmup, "total": self.total, "cycles": self.cycles,
                "extensions": [list(e) for e in self.extensions]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LRPlan":
        return cls(data["schedule"], int(data["warmup"]), int(data["total"]), int(data["cycles"]),
                   [list(e) for e in data.get("extensions", [])])


def resume_plan(state, cfg) -> tuple[LRPlan, str]:
    """The LR plan to continue ``state`` (a :class:`.state.TrainingState`) under ``cfg`` (a
    :class:`.config.TrainConfig`), and a log line when ``cfg.steps`` changes the recorded run.

    Raises ValueError listing the settings that differ from the recorded ones (see the module doc).
    """
    import dataclasses

    recorded = state.meta.get("train_config")
    if isinstance(recorded, dict):
        changes = {k: v for k, v in settings_changes(recorded, cfg.to_dict()).items() if k != "steps"}
        if changes:
            listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise ValueError(
                f"--resume: the checkpoint {str(state.path)!r} was trained with other settings ({listing}); resume "
                "with the recorded settings (omit these options: `stdiff train --resume --out DIR` reads them from "
                "the checkpoint), or start a new run in another --out. Only --steps and the run options "
                f"({', '.join(RUN_FIELDS)}) may change")
    recorded_steps = int(recorded["steps"]) if isinstance(recorded, dict) else cfg.steps
    if isinstance(state.meta.get("lr_plan"), dict):
        plan = LRPlan.from_dict(state.meta["lr_plan"])
    else:  # checkpoints written before plans were recorded: the configured schedule of the recorded run
        old = dataclasses.replace(cfg, steps=recorded_steps)
        plan = LRPlan(old.lr_schedule, old.warmup(), old.steps, old.lr_cycles)
    end = int(plan.extensions[-1][2]) if plan.extensions else plan.total
    if cfg.steps == end or cfg.steps <= state.step:
        return plan, ""
    restart_warmup = dataclasses.replace(cfg, steps=cfg.steps - state.step, warmup_steps=None).warmup() \
        if cfg.warmup_steps is None else cfg.warmup_steps
    start, factor, total, ramp, peak = plan.extend(state.step, cfg.steps, restart_warmup)
    how = (f"warms up from {factor * cfg.lr:.3g} to {peak * cfg.lr:.3g} over {ramp} steps, then decays to 0"
           if ramp else f"continues from {factor * cfg.lr:.3g} and decays to 0")
    return plan, (f"steps changed from {end} to {cfg.steps} at step {start}: the learning rate {how} at step "
                  f"{total} (continuous schedule)")
