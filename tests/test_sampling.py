"""Noise schedule and samplers, checked against diffusers' schedulers and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff.sampling import (
    DDIMSampler, DDPMSampler, DPMSolverPPSampler, NoiseSchedule, dpm_timesteps, make_sampler, spaced_timesteps,
)

diffusers = pytest.importorskip("diffusers")
# diffusers 0.42's DPMSolverMultistepScheduler.set_timesteps triggers a numpy 2 DeprecationWarning
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SCHED = NoiseSchedule()
S2 = 0.25  # variance of the Gaussian "data" of the fake denoiser


def ideal_eps(x: torch.Tensor, t) -> torch.Tensor:
    """E[eps | x_t] for data ~ N(0, S2)."""
    a = SCHED.alpha_bar(int(t))
    return math.sqrt(1 - a) / (a * S2 + 1 - a) * x


def fake_eps(x: torch.Tensor, t) -> torch.Tensor:
    """The ideal eps plus a nonlinear term (so that every coefficient matters)."""
    return ideal_eps(x, t) + 0.05 * torch.sin(3 * x)


def patched(ref):
    """A diffusers scheduler using our float64 alphas_cumprod (isolates float32-cumprod effects)."""
    ref.alphas_cumprod = SCHED.alphas_cumprod.clone()
    return ref


def dpm_patch_sigmas(ref) -> None:
    """After set_timesteps: diffusers 0.42 keeps DPM sigmas in float32; use float64 ones."""
    a = SCHED.alphas_cumprod
    sig = ((1 - a) / a).sqrt()
    last = sig[0] if ref.config.final_sigmas_type == "sigma_min" else torch.zeros((), dtype=torch.float64)
    ref.sigmas = torch.cat([sig[ref.timesteps], last[None]])


def step(sampler, eps, t, x, generator=None):
    """``sampler.step`` with a stochastic step's noise drawn from ``generator`` (as diffusers draws it)."""
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if sampler.needs_noise(t) else None
    return sampler.step(eps, t, x, noise=z).prev_sample


def run_chain(sampler, denoise_fn, shape, generator, dtype=torch.float32, device="cpu"):
    """The whole reverse process from x_T ~ N(0, I) with noise from a CPU ``generator`` (moved to ``device``)."""
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
    sampler.reset()
    for t in sampler.timesteps.tolist():
        z = torch.randn(shape, generator=generator).to(device, dtype) if sampler.needs_noise(t) else None
        x = sampler.step(denoise_fn(x, torch.tensor(t, device=device)), t, x, noise=z).prev_sample
    return x


def assert_same_trajectory(ref, ours, x, *, seed=None, atol=1e-5, rtol=1e-5, ref_hook=None, **ref_kw):
    """Run both loops from x with the fake eps and compare the timesteps and every step's output."""
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    if ref_hook is not None:
        ref_hook(ref)
    g_ref = torch.Generator().manual_seed(seed) if seed is not None else None
    g_our = torch.Generator().manual_seed(seed) if seed is not None else None
    xr, xo = x.clone(), x.clone()
    for t in ref.timesteps:
        xr = ref.step(fake_eps(xr, t), t, xr, generator=g_ref, **ref_kw).prev_sample
        xo = step(ours, fake_eps(xo, t), t, xo, g_our)
        assert xo.dtype == x.dtype
        torch.testing.assert_close(xo, xr.to(x.dtype), atol=atol, rtol=rtol)
    return xo


def _set(sampler, n):
    sampler.set_timesteps(n)
    return sampler


def gaussian(dtype=torch.float32, shape=(2, 3, 4, 4), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- noise schedule ----------------------------------------------------------------------------
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_matches_diffusers(beta_schedule):
    ours = NoiseSchedule(beta_schedule=beta_schedule)
    ref = diffusers.DDPMScheduler(beta_schedule=beta_schedule)
    assert ours.alphas_cumprod.dtype == torch.float64 and ours.num_train_timesteps == 1000
    # diffusers accumulates the product in float32: relative error ~1e-6
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-6, atol=1e-12)
    torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=1e-6, atol=0)   # float32 betas there
    torch.testing.assert_close(ours.alphas_cumprod, torch.cumprod(1 - ours.betas, 0), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_matches_diffusers(dtype):
    x0, noise = gaussian(dtype, (6, 3, 5, 5), 1), gaussian(dtype, (6, 3, 5, 5), 2)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    out = SCHED.add_noise(x0, noise, t)
    assert out.dtype == dtype and out.shape == x0.shape
    torch.testing.assert_close(out, patched(diffusers.DDPMScheduler()).add_noise(x0, noise, t))
    torch.testing.assert_close(out, diffusers.DDPMScheduler().add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)
    a = SCHED.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(out.double(), a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double(),
                               atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)


def test_add_noise_bad_args():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        SCHED.add_noise(x, x, torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        SCHED.add_noise(x, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="noise"):
        SCHED.add_noise(x, torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        SCHED.add_noise(x, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="floating"):
        SCHED.add_noise(torch.zeros(2, 3, dtype=torch.long), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        NoiseSchedule(1)


def test_add_noise_compiles_without_graph_break():
    """The eager range check reads t on the host; inside torch.compile it is skipped, so a training
    step compiles as one graph, and the compiled result equals the eager one."""
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 499, 999])
    compiled = torch.compile(SCHED.add_noise, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x0, noise, t), SCHED.add_noise(x0, noise, t), atol=0, rtol=0)


# ---- timestep grids ----------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1000, 37])
def test_grids_match_diffusers_for_every_step_count(T):
    ddim = {sp: diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=sp)
            for sp in ("leading", "trailing", "linspace")}
    dpm = {sp: diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing=sp)
           for sp in ("linspace", "trailing")}
    for n in range(1, T + 1):
        for sp, ref in ddim.items():
            ref.set_timesteps(n)
            ours = spaced_timesteps(T, n, sp)
            assert len(ours) == n and len(set(ours)) == n and 0 <= min(ours) and max(ours) < T
            # diffusers' "trailing" sometimes appends a stray -1 (float arange overshoot): we keep n
            assert ref.timesteps.tolist()[:n] == ours and ref.timesteps.tolist()[n:] in ([], [-1])
        for sp, ref in dpm.items():
            ref.set_timesteps(n)
            ours = dpm_timesteps(T, n, sp)
            expected = list(dict.fromkeys(ref.timesteps.tolist()[:n]))   # n = T repeats one timestep
            assert ours == expected and ours == sorted(ours, reverse=True)


def test_official_ddpm_grid():
    s = make_sampler("ddpm", 100)
    assert s.timesteps.tolist() == list(range(990, -1, -10)) and s.timesteps.dtype == torch.long
    assert [s.prev_timestep(i) for i in range(3)] == [980, 970, 960] and s.prev_timestep(99) == -1


# ---- DDPM --------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_ddpm_matches_diffusers(n, seed):
    ref = patched(diffusers.DDPMScheduler())
    ref.set_timesteps(n)
    ours = make_sampler("ddpm", n)
    assert_same_trajectory(ref, ours, gaussian(seed=seed), seed=seed)


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 50, 333])
def test_ddpm_other_spacings_match_diffusers(spacing, n):
    ref = patched(diffusers.DDPMScheduler(timestep_spacing=spacing))
    ref.set_timesteps(n)
    assert_same_trajectory(ref, _set(DDPMSampler(timestep_spacing=spacing), n), gaussian(), seed=3)


@pytest.mark.parametrize("n", [1000, 100])
def test_ddpm_stock_diffusers_float32_schedule(n):
    """Against unmodified diffusers (float32 cumprod) the trajectories agree to ~3e-5."""
    ref = diffusers.DDPMScheduler()
    ref.set_timesteps(n)
    assert_same_trajectory(ref, make_sampler("ddpm", n), gaussian(), seed=0, atol=1e-4, rtol=1e-4)


def _official_ddpm_step(eps, t, x, n, noise):
    """The official (diffusers 0.15) strided DDPM step in float64: prev_t = t - T // n."""
    T = 1000
    prev_t = t - T // n
    a_t = SCHED.alphas_cumprod[t]
    a_prev = SCHED.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
    beta = 1 - a_t / a_prev
    x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x
    var = torch.clamp((1 - a_prev) / (1 - a_t) * beta, min=1e-20)
    return mean + var.sqrt() * noise if t > 0 else mean


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 1000))
def test_ddpm_matches_official_formula(n):
    ours = make_sampler("ddpm", n)
    x = gaussian(torch.float64, (3, 5))
    g = torch.Generator().manual_seed(n)
    for t in ours.timesteps.tolist()[:20] + ours.timesteps.tolist()[-3:]:
        eps = fake_eps(x, t)
        noise = torch.randn(x.shape, generator=torch.Generator().set_state(g.get_state()), dtype=x.dtype)
        out = step(ours, eps, t, x, g)
        torch.testing.assert_close(out, _official_ddpm_step(eps, t, x, n, noise), atol=1e-12, rtol=1e-12)
        x = out


def test_ddpm_sample_is_distributed_like_the_data():
    """With the ideal eps of N(0, S2) data, 1000-step ancestral DDPM samples have variance S2."""
    s = make_sampler("ddpm", 1000, clip_sample=False)
    out = run_chain(s, ideal_eps, (6000,), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(out.mean().item()) < 0.02 and abs(out.var().item() - S2) < 0.015


# ---- DDIM --------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 400), eta=st.sampled_from([0.0, 0.0, 0.5, 1.0]), clip=st.booleans(),
       alpha_one=st.booleans(), clipped_eps=st.booleans())
def test_ddim_matches_diffusers(n, eta, clip, alpha_one, clipped_eps):
    ref = patched(diffusers.DDIMScheduler(clip_sample=clip, set_alpha_to_one=alpha_one))
    ref.final_alpha_cumprod = torch.tensor(1.0) if alpha_one else SCHED.alphas_cumprod[0]
    ref.set_timesteps(n)
    ours = make_sampler("ddim", n, eta=eta, clip_sample=clip, set_alpha_to_one=alpha_one,
                        use_clipped_model_output=clipped_eps)
    assert_same_trajectory(ref, ours, gaussian(), seed=n, eta=eta, use_clipped_model_output=clipped_eps)


@pytest.mark.parametrize("n", [10, 250, 1000])
def test_ddim_trailing_matches_diffusers_when_n_divides_T(n):
    ref = patched(diffusers.DDIMScheduler(timestep_spacing="trailing"))
    ref.set_timesteps(n)
    assert_same_trajectory(ref, _set(DDIMSampler(timestep_spacing="trailing"), n), gaussian(torch.float64))


def test_ddim_linspace_steps_to_the_next_grid_point():
    """diffusers' DDIM always steps to t - T // n, skipping grid points on a linspace grid; we step
    to the next grid point, which for a deterministic DDIM equals running DDIM on that grid."""
    s = _set(DDIMSampler(timestep_spacing="linspace", clip_sample=False), 10)
    x = gaussian(torch.float64)
    for i, t in enumerate(s.timesteps.tolist()):
        eps = fake_eps(x, t)
        a_t, a_prev = SCHED.alpha_bar(t), SCHED.alpha_bar(s.prev_timestep(i))
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        x = s.step(eps, t, x).prev_sample
        torch.testing.assert_close(x, expected, atol=1e-12, rtol=1e-12)
    assert s.timesteps.tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]


# ---- DPM-Solver++ ------------------------------------------------------------------------------
@settings(max_examples=16, deadline=None)
@given(n=st.integers(1, 200), order=st.sampled_from([2, 3]), final=st.sampled_from(["sigma_min", "zero"]),
       clip=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_dpmpp_matches_diffusers(n, order, final, clip, dtype):
    # diffusers' thresholding with sample_max_value=1 is exactly clipping x0 to [-1, 1]
    ref = diffusers.DPMSolverMultistepScheduler(solver_order=order, final_sigmas_type=final, thresholding=clip,
                                                sample_max_value=1.0)
    ref.set_timesteps(n)
    ours = make_sampler("dpmpp3m" if order == 3 else "dpmpp", n, final_sigmas_type=final, clip_sample=clip)
    # diffusers computes DPM steps in float32 even for float64 samples
    assert_same_trajectory(ref, ours, gaussian(dtype), ref_hook=dpm_patch_sigmas)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("n", [10, 20, 100])
def test_dpmpp_official_config_against_stock_diffusers(order, n):
    """The official DPMMS (diffusers 0.15: last step to t = 0, no clipping) is diffusers 0.42 with
    final_sigmas_type="sigma_min"; unmodified 0.42 (float32 sigmas) agrees to ~3e-5."""
    ref = diffusers.DPMSolverMultistepScheduler(solver_order=order, final_sigmas_type="sigma_min")
    ref.set_timesteps(n)
    ours = make_sampler("dpmpp3m" if order == 3 else "dpmpp", n, final_sigmas_type="sigma_min")
    assert_same_trajectory(ref, ours, gaussian(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("order", [2, 3])
def test_dpmpp_default_ends_at_clean_data_like_stock_diffusers(order):
    ref = diffusers.DPMSolverMultistepScheduler(solver_order=order)  # final_sigmas_type="zero"
    ref.set_timesteps(20)
    ours = make_sampler("dpmpp3m" if order == 3 else "dpmpp", 20)
    assert_same_trajectory(ref, ours, gaussian(), atol=1e-4, rtol=1e-4)


def test_dpmpp_order_schedule():
    s = DPMSolverPPSampler(solver_order=3)
    assert [s._order(i, 10) for i in range(10)] == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert [s._order(i, 20) for i in range(20)] == [1, 2] + [3] * 18
    s = DPMSolverPPSampler(solver_order=3, final_sigmas_type="zero")
    assert [s._order(i, 20) for i in range(20)] == [1, 2] + [3] * 17 + [1]


def test_dpmpp_trailing_full_grid_has_no_nan():
    """trailing with n = T ends with a zero-length step (t = 0 -> t = 0): it is the identity."""
    s = make_sampler("dpmpp3m", 1000, timestep_spacing="trailing", final_sigmas_type="sigma_min")
    assert s.timesteps[-1].item() == 0
    x = gaussian(torch.float64, (4,))
    for t in s.timesteps[:-1]:
        x = s.step(fake_eps(x, t), t, x).prev_sample
    last = s.step(fake_eps(x, 0), 0, x).prev_sample
    assert torch.isfinite(last).all()
    torch.testing.assert_close(last, x, atol=0, rtol=0)


def test_dpmpp_full_linspace_grid_drops_the_repeated_timestep():
    s = make_sampler("dpmpp", 1000)
    assert s.num_inference_steps == 999 and len(set(s.timesteps.tolist())) == 999


def test_dpmpp_history_rules():
    s = make_sampler("dpmpp3m", 10)
    ts = s.timesteps.tolist()
    x = gaussian()
    first = [s.step(fake_eps(x, t), t, x).prev_sample for t in ts[:3]]
    with pytest.raises(ValueError, match="in order"):
        s.step(fake_eps(x, ts[5]), ts[5], x)
    # a step at the first timestep starts a new trajectory without an explicit reset()
    again = [s.step(fake_eps(x, t), t, x).prev_sample for t in ts[:3]]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---- the step's outputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw", [("ddpm", {}), ("ddpm", {"clip_sample": False}), ("ddim", {"eta": 0.5}),
                                      ("ddim", {"clip_sample": False}), ("dpmpp", {}), ("dpmpp3m", {}),
                                      ("dpmpp", {"clip_sample": True})])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_pred_original_sample_is_the_x0_formula(name, kw, dtype):
    """Every step returns x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (clipped when the sampler
    clips) next to x_prev, in the sample's dtype; step(t) and step_at(index of t) are the same step."""
    s, twin = make_sampler(name, 10, **kw), make_sampler(name, 10, **kw)
    clip = getattr(s, "clip_sample", False)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    for j, t in enumerate(s.timesteps.tolist()):
        eps = fake_eps(x.double(), t).to(dtype)
        z = torch.randn(x.shape, generator=g).to(dtype) if s.needs_noise(t) else None
        assert s.needs_noise_at(j) == s.needs_noise(t)
        out = s.step(eps, t, x, noise=z)
        a = SCHED.alpha_bar(t)
        x0 = (x.double() - math.sqrt(1 - a) * eps.double()) / math.sqrt(a)
        if clip:
            x0 = x0.clamp(-1, 1)
        assert out.pred_original_sample.dtype == out.prev_sample.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-2 * max(1.0, float(x0.abs().max()))
        torch.testing.assert_close(out.pred_original_sample.double(), x0, atol=tol, rtol=1e-2 if tol > 1e-12 else 0)
        again = twin.step_at(j, eps, x, z)
        assert torch.equal(again.prev_sample, out.prev_sample)
        assert torch.equal(again.pred_original_sample, out.pred_original_sample)
        x = out.prev_sample
    if name.startswith("dpmpp"):  # the last step goes to the clean data: x_prev is x0
        assert torch.equal(out.prev_sample, out.pred_original_sample)


# ---- closed form: Gaussian data, probability-flow ODE ------------------------------------------
def _ode_error(name: str, n: int, **kw) -> float:
    """Relative error of a deterministic sampler against the exact ODE map x_end = x_T sqrt(v_end / v_T),
    v_t = abar_t S2 + 1 - abar_t, for the ideal eps of N(0, S2) data."""
    s = make_sampler(name, n, **kw)
    x = xt = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for t in s.timesteps:
        x = s.step(ideal_eps(x, t), t, x).prev_sample

    def v(t: int) -> float:
        return SCHED.alpha_bar(t) * S2 + 1 - SCHED.alpha_bar(t)

    end = 0 if name.startswith("dpmpp") and kw.get("final_sigmas_type", "sigma_min") == "sigma_min" else -1
    scale = math.sqrt(v(end) / v(s.timesteps[0].item()))
    return ((x - scale * xt).abs().max() / (scale * 3)).item()


def test_samplers_converge_to_the_ode_solution():
    ddim = [_ode_error("ddim", n, clip_sample=False) for n in (50, 100, 200, 1000)]
    assert all(b < 0.6 * a for a, b in zip(ddim, ddim[1:])) and ddim[-1] < 5e-3     # first order
    dpm2 = [_ode_error("dpmpp", n, final_sigmas_type="zero") for n in (20, 40, 160)]
    assert dpm2[1] < 0.15 * dpm2[0] and dpm2[-1] < 5e-4                              # higher order
    assert _ode_error("dpmpp3m", 160, final_sigmas_type="zero") < 5e-3
    assert _ode_error("dpmpp3m", 160) < 5e-3


# ---- common interface --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp", "dpmpp3m"])
def test_int_and_tensor_timesteps_and_batching_agree(name):
    s = make_sampler(name, 5)
    x = gaussian(shape=(3, 2, 4))
    outs = []
    for as_tensor in (False, True):
        s.reset()
        y = x.clone()
        for t in s.timesteps.tolist():
            tt = torch.tensor(t) if as_tensor else t
            y = step(s, fake_eps(y, t), tt, y, torch.Generator().manual_seed(t))
        outs.append(y)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    if name != "ddpm":   # deterministic samplers: each batch element evolves independently
        s.reset()
        y = x[1:2].clone()
        for t in s.timesteps.tolist():
            y = s.step(fake_eps(y, t), t, y).prev_sample
        torch.testing.assert_close(y, outs[0][1:2], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp3m"])
def test_half_precision_follows_dtype(name):
    s = make_sampler(name, 10)
    out = run_chain(s, fake_eps, (2, 3, 4), torch.Generator().manual_seed(0), dtype=torch.bfloat16)
    ref = run_chain(make_sampler(name, 10), fake_eps, (2, 3, 4), torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["ddpm", "dpmpp"])
def test_cuda_matches_cpu_with_a_cpu_generator(name):
    a = run_chain(make_sampler(name, 20), fake_eps, (2, 3, 8, 8), torch.Generator().manual_seed(0))
    b = run_chain(make_sampler(name, 20), fake_eps, (2, 3, 8, 8), torch.Generator().manual_seed(0), device="cuda")
    assert b.device.type == "cuda"
    torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    for bad in (0, 1001, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1000\]"):
            make_sampler("ddpm", bad)
        with pytest.raises(ValueError, match="num_inference_steps must be an int"):
            DDPMSampler().set_timesteps(bad)
    for bad in ("euler", ["ddim"], None):
        with pytest.raises(ValueError, match="sampler must be one of"):
            make_sampler(bad, 10)
    assert make_sampler("dpmpp").num_inference_steps == 20  # DEFAULT_STEPS
    assert make_sampler("ddim", np.int64(7)).timesteps.tolist() == make_sampler("ddim", 7).timesteps.tolist()
    with pytest.raises(ValueError, match=r"index must be an int in \[0, 10\)"):
        make_sampler("ddim", 10).step_at(10, torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="timestep_spacing"):
        make_sampler("ddim", 10, timestep_spacing="uniform")
    with pytest.raises(ValueError, match="timestep_spacing"):
        make_sampler("dpmpp", 10, timestep_spacing="leading")
    with pytest.raises(ValueError, match="solver_order"):
        DPMSolverPPSampler(solver_order=4)
    with pytest.raises(ValueError, match="final_sigmas_type"):
        DPMSolverPPSampler(final_sigmas_type="none")
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(eta=-1.0)
    with pytest.raises(TypeError, match="schedule"):
        DDPMSampler("linear")
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DDPMSampler().step(torch.zeros(1), 0, torch.zeros(1))
    s = make_sampler("ddpm", 10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="not in this sampler's timesteps"):
        s.step(x, 5, x)
    with pytest.raises(ValueError, match="timestep must be"):
        s.step(x, 900.0, x)
    with pytest.raises(ValueError, match="timestep must be"):
        s.step(x, torch.tensor([900, 800]), x)
    with pytest.raises(ValueError, match="model_output"):
        s.step(torch.zeros(2, 4), 900, x)
    with pytest.raises(TypeError, match="sample"):
        s.step(x, 900, torch.zeros(2, 3, dtype=torch.long))
    assert s.needs_noise(900) and not s.needs_noise(0)
    with pytest.raises(ValueError, match="noise must be a tensor of sample's shape"):
        s.step(x, 900, x)
    with pytest.raises(ValueError, match="noise must be a tensor of sample's shape"):
        s.step(x, 900, x, noise=torch.zeros(3))
    with pytest.raises(ValueError, match="noise must be None"):
        s.step(x, 0, x, noise=x)
    assert not make_sampler("ddim", 10).needs_noise(900) and make_sampler("ddim", 10, eta=0.5).needs_noise(900)
