"""torch.compile(fullgraph=True) through the public stdiff.ops functions, for every backend.

Three small blocks built from the fused ops (a SPADE resnet block, two Conv-GRU steps, an
Euler-Heun SDE loop with explicit and with in-op Philox noise) are compiled with
``fullgraph=True``, so any graph break fails the test; outputs and gradients must match eager.

On CPU the compiler is ``aot_eager``: Dynamo capture plus AOTAutograd (fake tensors,
functionalization, the joint forward/backward graph), which is what Inductor receives;
Inductor's own code generation for CPU costs 50-100 s per block here and is not about the
ops. On CUDA (backends "cuda" and "triton") the compiler is Inductor.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stdiff import ops

def _target(backend: str) -> tuple[str, str]:
    """(device, torch.compile backend) for an op backend; skips when it cannot run here."""
    available, reason = ops.backend_status()[backend]
    if not available:
        pytest.skip(f"backend {backend!r} unavailable: {reason}")
    on_gpu = backend == "cuda" or (backend == "triton" and torch.cuda.is_available())
    return ("cuda", "inductor") if on_gpu else ("cpu", "aot_eager")


class SpadeResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> SPADE(m) + time bias -> SiLU -> conv, plus the skip."""

    def __init__(self, backend: str, channels: int = 8, m_channels: int = 4, temb: int = 16, hidden: int = 6):
        super().__init__()
        self.backend = backend
        self.norm = nn.GroupNorm(4, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.shared = nn.Conv2d(m_channels, hidden, 3, padding=1)
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        self.temb = nn.Linear(temb, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm(x)))
        a = F.relu(self.shared(F.interpolate(m, size=h.shape[-2:], mode="nearest")))
        h = ops.spade_norm(h, self.gamma(a), self.beta(a), bias=self.temb(t), backend=self.backend)
        return x + self.conv2(F.silu(h))


class ConvGRUSteps(nn.Module):
    """A Conv-GRU cell run over the first axis of its input, from a zero state."""

    def __init__(self, backend: str, features: int = 4):
        super().__init__()
        self.backend = backend
        self.gx = nn.Conv2d(features, 2 * features, 3, padding=1)
        self.gh = nn.Conv2d(features, 2 * features, 3, padding=1, bias=False)
        self.cx = nn.Conv2d(features, features, 3, padding=1)
        self.ch = nn.Conv2d(features, features, 3, padding=1, bias=False)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(xs[0])
        for k in range(xs.shape[0]):
            u, rh = ops.convgru_gates(self.gx(xs[k]), self.gh(h), h, backend=self.backend)
            h = ops.convgru_update(self.cx(xs[k]), self.ch(rh), u, h, backend=self.backend)
        return h


class HeunLoop(nn.Module):
    """Euler-Heun steps with drift tanh(conv(y)) and raw diffusion conv(y) (tanh fused in the op).

    The Brownian increments are the rows of ``noise`` or, without it, drawn in the ops from
    (seed, offset = step index), the same Philox stream on every backend.
    """

    def __init__(self, backend: str, steps: int = 3, channels: int = 4, dt: float = 0.1):
        super().__init__()
        self.backend, self.steps, self.dt = backend, steps, dt
        self.f = nn.Conv2d(channels, channels, 3, padding=1)
        self.g = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, y: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        for k in range(self.steps):
            dw = None if noise is None else noise[k]
            rng = {"seed": 7, "offset": k} if noise is None else {}
            g = self.g(y)
            y_pred = ops.sde_predict(y, g, dw, dt=self.dt, g_is_raw=True, backend=self.backend, **rng)
            y = ops.sde_step(
                y, torch.tanh(self.f(y)), g, dw, self.dt, g_pred=self.g(y_pred), g_is_raw=True,
                backend=self.backend, **rng,
            )
        return y


def _block(name: str, backend: str, device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, device=device)

    if name == "spade_resnet":
        return SpadeResBlock(backend), (randn(2, 8, 8, 8), randn(2, 4, 4, 4), randn(2, 16))
    if name == "convgru_steps":
        return ConvGRUSteps(backend), (randn(3, 2, 4, 6, 6),)
    if name == "heun_loop":
        return HeunLoop(backend), (randn(2, 4, 6, 6), 0.3 * randn(3, 2, 4, 6, 6))
    return HeunLoop(backend), (randn(2, 4, 6, 6),)


def _outputs_and_grads(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = module(*leaves)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), [*leaves, *module.parameters()])
    return [out.detach(), *grads]


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda", "triton"])
@pytest.mark.parametrize("block", ["spade_resnet", "convgru_steps", "heun_loop"])
def test_compiled_block_matches_eager(block: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_block(block, backend, monkeypatch)


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda", "triton"])
def test_compiled_philox_loop_matches_eager(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_block("heun_loop_philox", backend, monkeypatch)


def _check_block(block: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    device, compiler = _target(backend)
    # TF32 convolutions (cuDNN's default) would differ between eager and Inductor's choices by ~1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    module, inputs = _block(block, backend, device)
    module = module.to(device)
    expected = _outputs_and_grads(module, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=compiler)
    got = _outputs_and_grads(compiled, inputs)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{block}/{backend}: tensor {i}")
