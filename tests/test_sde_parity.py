"""The motion SDE of a converted official checkpoint, run number for number against the official call.

The official code integrates with ``torchsde.sdeint(diff_unet, m, ts, method="euler_heun", dt=0.1)``
on float32 ``ts = [To - 1, *idx_p]`` and a torchsde Brownian motion it creates. Our solver in
``grid="torchsde"`` mode, given the same torchsde Brownian object, must give the same states.
"""
from __future__ import annotations

import pytest
import torch
import torchsde
from test_official import OFFICIAL_SMALL, SMALL, _OfficialDiffUnet, official_state, write_pipeline

from stdiff.official import load_official



@pytest.fixture(scope="module")
def official_model(tmp_path_factory):
    official = official_state(SMALL, seed=7)
    model = load_official(write_pipeline(tmp_path_factory.mktemp("official") / "pipe", official)).eval()
    return official, model


def _brownian(kind: str, t0: float, t1: float, size: tuple[int, int], entropy: int):
    if kind == "BrownianTree":
        return torchsde.BrownianTree(t0=t0, w0=torch.zeros(size), t1=t1, entropy=entropy)
    return torchsde.BrownianInterval(t0=t0, t1=t1, size=size, entropy=entropy)


@pytest.mark.parametrize("kind", ["BrownianInterval", "BrownianTree"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("fps", [1, 2])
def test_torchsde_mode_equals_the_official_sdeint_call(official_model, kind, backend, fps):
    official, model = official_model
    sde = model.sde
    sde.backend = backend
    to, tp = 3, 3
    idx_p = torch.linspace(to, to + tp - 1, fps * (tp - 1) + 1)  # the official test script's float32 times
    ts = torch.cat([torch.tensor([to - 1.0]), idx_p])
    gen = torch.Generator().manual_seed(fps)
    y0 = torch.randn(2, 32, 4, 4, generator=gen)
    size = (2, 32 * 4 * 4)
    theirs_bm = _brownian(kind, float(ts[0]), float(ts[-1]), size, entropy=11)
    ours_bm = _brownian(kind, float(ts[0]), float(ts[-1]), size, entropy=11)
    func = _OfficialDiffUnet(official, OFFICIAL_SMALL["tde_cfg"]["Int"]["sde_options"]["sde_type"], (32, 4, 4))
    with torch.no_grad():
        theirs = torchsde.sdeint(func, y0.flatten(1), ts, bm=theirs_bm, method="euler_heun", dt=0.1)[1:]
        ours = sde.solve(y0, float(ts[0]), idx_p.tolist(), bm=ours_bm, grid="torchsde")
    tol = 1e-6 if backend == "reference" else 2e-6
    torch.testing.assert_close(ours.flatten(2), theirs, atol=tol * float(theirs.abs().max()), rtol=0)


def test_exact_mode_differs_from_the_official_grid_only_by_float32_times_on_grid(official_model):
    """With on-grid queries and one Brownian path, exact and torchsde modes differ only by the
    float32 time grid (a few 1e-4 over two frames at most on this model, see the README)."""
    official, model = official_model
    model.sde.backend = "reference"
    gen = torch.Generator().manual_seed(3)
    y0 = torch.randn(2, 32, 4, 4, generator=gen)
    with torch.no_grad():
        exact = model.sde.solve(y0, 2.0, [3.0, 4.0], bm=torchsde.BrownianInterval(2.0, 4.0, size=(2, 512), entropy=5))
        compat = model.sde.solve(y0, 2.0, [3.0, 4.0], bm=torchsde.BrownianInterval(2.0, 4.0, size=(2, 512), entropy=5),
                                 grid="torchsde")
    difference = float((exact - compat).abs().max())
    assert 0 < difference < 1e-3
