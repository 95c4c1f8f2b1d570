"""stdiff.metrics and stdiff.evaluation against independent implementations, invariances, bad input.

References: scikit-image (PSNR, SSIM), torchmetrics (PSNR), scipy.linalg.sqrtm (Frechet distance),
numpy.cov (streaming statistics), a functional AlexNet/LPIPS written here from the paper's
definition, and the ``lpips`` package when it and torchvision are installed. Weights are created
by the tests: a random AlexNet in torchvision's state-dict format and a scripted stand-in I3D.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

from stdiff.evaluation import Evaluator
from stdiff.metrics import (
    AlexNetFeatures,
    FeatureStats,
    I3DFeatures,
    frechet_distance,
    fvd,
    inter_sample_lpips,
    load_i3d,
    load_lpips,
    psnr,
    ssim,
)
from stdiff.metrics import _weights

HEAD_CHANNELS = (64, 192, 384, 256, 256)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random AlexNet in torchvision's format (plus an ignored classifier key) and random LPIPS heads."""
    root = tmp_path_factory.mktemp("lpips_weights")
    torch.manual_seed(1)
    trunk = AlexNetFeatures()
    state = {f"features.{k[len('features.'):]}": v for k, v in trunk.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(3, 3)
    torch.save(state, root / "alexnet.pth")
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(HEAD_CHANNELS)}
    torch.save(heads, root / "alex_heads.pth")
    return {"backbone": root / "alexnet.pth", "heads": root / "alex_heads.pth", "state": state, "heads_state": heads}


@pytest.fixture(scope="module")
def lpips_model(weight_files):
    return load_lpips(weight_files["backbone"], weight_files["heads"])


class TinyI3D(nn.Module):
    """Stand-in for the StyleGAN-V TorchScript I3D: same call signature, 9-D features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(2, 16, 16), stride=(1, 16, 16))
        self.fc = nn.Linear(9, 4)

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        if x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise RuntimeError("expected (N, 3, T, 224, 224)")
        if bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise RuntimeError("expected values in [-1, 1]")
        h = torch.cat([torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)), x.mean(dim=(1, 2, 3, 4)).unsqueeze(1)], dim=1)
        return h if return_features else self.fc(h)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but is the I3D file format
        torch.jit.script(TinyI3D().eval()).save(str(path))
    return path


def _structured(h: int, w: int, seed: int) -> np.ndarray:
    """(3, H, W) image with edges, gradients and texture, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(12 * xx + 7 * yy)])
    img[:, h // 4: h // 2, w // 3: 2 * w // 3] = rng.uniform()
    return np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)


def _with_eps(psnr_db) -> np.ndarray:
    """A reference PSNR with stdiff's documented 1e-8 added to the mean squared error."""
    return -10 * np.log10(10 ** (-np.asarray(psnr_db, dtype=np.float64) / 10) + 1e-8)


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return sk_ssim(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                   channel_axis=0)


# ----------------------------------------------------------------------------- PSNR / SSIM


@settings(max_examples=12, deadline=None)
@given(c=st.sampled_from([1, 3]), h=st.integers(11, 40), w=st.integers(11, 40), noise=st.floats(0.01, 0.5),
       seed=st.integers(0, 2**31 - 1))
def test_psnr_ssim_match_skimage_on_random_images(c, h, w, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, c, h, w, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref_psnr = [sk_psnr(x[i].numpy(), y[i].numpy(), data_range=1.0) for i in range(2)]
    ref_ssim = [_sk_ssim(x[i].numpy(), y[i].numpy()) for i in range(2)]
    np.testing.assert_allclose(psnr(y, x).numpy(), _with_eps(ref_psnr), rtol=1e-10)
    np.testing.assert_allclose(ssim(y, x).numpy(), ref_ssim, atol=1e-10)
    np.testing.assert_allclose(ssim(y.float(), x.float()).numpy(), ref_ssim, atol=2e-5)
    ref_tm = tm_psnr(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(psnr(y, x).numpy(), _with_eps(ref_tm), rtol=1e-6)


@pytest.mark.parametrize("shape", [(64, 64), (45, 70)])
def test_psnr_ssim_match_skimage_on_structured_images(shape):
    a, b = _structured(*shape, seed=3), _structured(*shape, seed=4)
    blurred = np.stack([np.convolve(row, np.ones(5) / 5, mode="same") for row in a.reshape(-1, shape[1])])
    pairs = [(a, b), (a, blurred.reshape(a.shape).clip(0, 1)), (a, np.clip(a * 0.8 + 0.1, 0, 1))]
    x = torch.tensor(np.stack([p[0] for p in pairs]))
    y = torch.tensor(np.stack([p[1] for p in pairs]))
    np.testing.assert_allclose(ssim(y, x).numpy(), [_sk_ssim(p, q) for p, q in pairs], atol=1e-10)
    np.testing.assert_allclose(psnr(y, x).numpy(), _with_eps([sk_psnr(p, q, data_range=1.0) for p, q in pairs]),
                               rtol=1e-10)


def test_psnr_ssim_batched_leading_dims_and_identity():
    x = torch.rand(2, 3, 4, 1, 16, 16)
    y = torch.rand(2, 3, 4, 1, 16, 16)
    assert psnr(x, y).shape == ssim(x, y).shape == (2, 3, 4)
    torch.testing.assert_close(ssim(x, y)[1, 2], ssim(x[1, 2], y[1, 2]))
    assert torch.allclose(ssim(x, x), torch.ones(2, 3, 4))
    assert torch.allclose(psnr(x, x), torch.full((2, 3, 4), 80.0))  # mse + 1e-8: finite
    assert psnr(x.half(), y.half()).dtype == torch.float32


class OfficialSSIM(nn.Module):
    """The official STDiff ``SSIM`` module (stdiff/utils/metrics.py there), written out literally."""

    def __init__(self, window_size: int = 11) -> None:
        super().__init__()
        self.window_size = window_size

    def gaussian(self, window_size, sigma):
        gauss = torch.Tensor([math.exp(-(x - window_size // 2) ** 2 / float(2 * sigma ** 2)) for x in range(window_size)])
        return gauss / gauss.sum()

    def create_window(self, window_size, channel):
        _1d = self.gaussian(window_size, 1.5).unsqueeze(1)
        _2d = _1d.mm(_1d.t()).float().unsqueeze(0).unsqueeze(0)
        return _2d.expand(channel, 1, window_size, window_size).contiguous()

    def forward(self, img1, img2):
        channel = img1.shape[1]
        window = self.create_window(self.window_size, channel).type_as(img1)
        pad = self.window_size // 2
        mu1 = F.conv2d(img1, window, padding=pad, groups=channel)
        mu2 = F.conv2d(img2, window, padding=pad, groups=channel)
        mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
        sigma1_sq = F.conv2d(img1 * img1, window, padding=pad, groups=channel) - mu1_sq
        sigma2_sq = F.conv2d(img2 * img2, window, padding=pad, groups=channel) - mu2_sq
        sigma12 = F.conv2d(img1 * img2, window, padding=pad, groups=channel) - mu1_mu2
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
        return torch.mean(ssim_map, dim=(1, 2, 3))


@settings(max_examples=10, deadline=None)
@given(c=st.sampled_from([1, 3]), h=st.integers(3, 40), w=st.integers(3, 40), noise=st.floats(0.01, 0.5),
       seed=st.integers(0, 2**31 - 1))
def test_official_ssim_matches_the_official_module(c, h, w, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, c, h, w, generator=g)
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    expected = OfficialSSIM()(y.double(), x.double())
    torch.testing.assert_close(ssim(y.double(), x.double(), official=True), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(ssim(y, x, official=True), OfficialSSIM()(y, x), rtol=0, atol=2e-6)


def test_official_ssim_differs_from_skimage_on_dark_borders():
    """A bright square on black (a digit-like frame) and its shifted copy: zero padding sees black
    outside the frame too, so the official map scores the flat border windows as equal (1)."""
    x = torch.zeros(1, 1, 32, 32)
    x[..., 10:20, 10:20] = 1.0
    y = torch.roll(x, 3, dims=-1)
    official, ours = ssim(y, x, official=True).item(), ssim(y, x).item()
    assert official == pytest.approx(OfficialSSIM()(y, x).item(), abs=1e-6)
    assert official > ours + 0.05
    assert torch.allclose(ssim(x, x, official=True), torch.ones(1))
    with pytest.raises(TypeError, match="official must be a bool"):
        ssim(x, x, official="yes")
    assert ssim(torch.rand(2, 1, 5, 7), torch.rand(2, 1, 5, 7), official=True).shape == (2,)


# ----------------------------------------------------------------------------- LPIPS


def _reference_lpips(state: dict, heads: dict, x: Tensor, y: Tensor) -> Tensor:
    """LPIPS v0.1 written from the paper and torchvision's AlexNet definition, image by image."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    convs = [(0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False)]

    def feats(img):
        h = ((img * 2 - 1) - shift) / scale
        out = []
        for i, stride, pad, pool_first in convs:
            if pool_first:
                h = F.max_pool2d(h, 3, 2)
            h = F.relu(F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], stride, pad))
            out.append(h)
        return out

    result = []
    for xi, yi in zip(x, y):
        total = 0.0
        for k, (fx, fy) in enumerate(zip(feats(xi[None]), feats(yi[None]))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            w = heads[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
            total = total + ((nx - ny) ** 2 * w).sum(1).mean()
        result.append(total)
    return torch.stack(result)


def test_lpips_matches_functional_reference(weight_files, lpips_model):
    torch.manual_seed(5)
    x, y = torch.rand(3, 3, 64, 48), torch.rand(3, 3, 64, 48)
    ref = _reference_lpips(weight_files["state"], weight_files["heads_state"], x, y)
    torch.testing.assert_close(lpips_model(x, y), ref, rtol=1e-5, atol=1e-7)


def test_lpips_matches_lpips_package_when_installed(weight_files, lpips_model):
    lpips_pkg = pytest.importorskip("lpips")
    pytest.importorskip("torchvision")
    ref = lpips_pkg.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    ref.net.load_state_dict({f"slice{slices[int(k.split('.')[1])]}.{k[len('features.'):]}": v
                             for k, v in weight_files["state"].items() if k.startswith("features.")})
    ref.load_state_dict(weight_files["heads_state"], strict=False)
    torch.manual_seed(6)
    x, y = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x * 2 - 1, y * 2 - 1).flatten()
    torch.testing.assert_close(lpips_model(x, y), expected, rtol=1e-5, atol=1e-7)


def test_lpips_invariances(lpips_model):
    torch.manual_seed(7)
    x, y = torch.rand(2, 3, 1, 40, 40), torch.rand(2, 3, 1, 40, 40)
    d = lpips_model(x, y)
    assert d.shape == (2, 3) and bool((d > 0).all())
    assert bool((lpips_model(x, x) == 0).all())
    torch.testing.assert_close(lpips_model(y, x), d)
    torch.testing.assert_close(lpips_model(x.expand(-1, -1, 3, -1, -1), y.expand(-1, -1, 3, -1, -1)), d)
    lpips_model.chunk_size = 2
    try:
        torch.testing.assert_close(lpips_model(x, y), d)
    finally:
        lpips_model.chunk_size = 256


def test_lpips_loads_full_lpips_and_own_state_dicts(tmp_path, weight_files, lpips_model):
    full = {f"net.slice{s}.{k[len('features.'):]}": v for k, v in weight_files["state"].items()
            for s, idx in ((1, 0), (2, 3), (3, 6), (4, 8), (5, 10)) if k.startswith(f"features.{idx}.")}
    full.update(weight_files["heads_state"])
    full["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    torch.save(full, tmp_path / "lpips_full.pth")
    torch.save(lpips_model.state_dict(), tmp_path / "own.pth")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for path in ("lpips_full.pth", "own.pth"):
        torch.testing.assert_close(load_lpips(tmp_path / path)(x, y), lpips_model(x, y))


def test_lpips_heads_found_in_installed_package(tmp_path, monkeypatch, weight_files, lpips_model):
    weights = tmp_path / "site" / "lpips" / "weights" / "v0.1"
    weights.mkdir(parents=True)
    (tmp_path / "site" / "lpips" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    torch.save(weight_files["heads_state"], weights / "alex.pth")
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(load_lpips(weight_files["backbone"])(x, y), lpips_model(x, y))


def test_lpips_missing_or_wrong_weights_give_clear_errors(tmp_path, monkeypatch, weight_files):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_lpips()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_lpips(tmp_path / "nope.pth")
    monkeypatch.setattr(_weights, "installed_heads_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="linear heads"):
        load_lpips(weight_files["backbone"])
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no AlexNet backbone weights"):
        load_lpips(tmp_path / "other.pth", weight_files["heads"])
    bad = dict(weight_files["state"], **{"features.0.weight": torch.zeros(64, 3, 5, 5)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape"):
        load_lpips(tmp_path / "bad.pth", weight_files["heads"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable state dict"):
        load_lpips(tmp_path / "junk.pth")


def test_inter_sample_lpips(lpips_model):
    torch.manual_seed(8)
    samples = torch.rand(2, 3, 2, 1, 32, 32)  # (N, S, T, C, H, W)
    d = inter_sample_lpips(samples, lpips_model, dim=1)
    pairs = [lpips_model(samples[:, i], samples[:, j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    torch.testing.assert_close(d, sum(pairs) / 3)
    torch.testing.assert_close(inter_sample_lpips(samples[:, [2, 0, 1]], lpips_model, dim=-5), d)
    same = samples[:, :1].expand(-1, 4, -1, -1, -1, -1)
    assert bool((inter_sample_lpips(same, lpips_model) == 0).all())
    with pytest.raises(ValueError, match="at least 2 samples"):
        inter_sample_lpips(samples[:, :1], lpips_model)
    with pytest.raises(ValueError, match="sample axis"):
        inter_sample_lpips(samples, lpips_model, dim=-3)


# ----------------------------------------------------------------------------- Frechet / FVD


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


@settings(max_examples=10, deadline=None)
@given(d=st.integers(2, 24), n1=st.integers(3, 60), n2=st.integers(3, 60), seed=st.integers(0, 2**31 - 1))
def test_frechet_matches_scipy(d, n1, n2, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d))
    b = rng.standard_normal((n2, d)) * rng.uniform(0.5, 2, d) + rng.standard_normal(d)
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    ref = _scipy_frechet(*args)
    tol = 1e-7 * (1 + np.trace(args[1]) + np.trace(args[3]))
    assert frechet_distance(*args) == pytest.approx(ref, rel=1e-7, abs=tol)
    assert frechet_distance(*args) == pytest.approx(frechet_distance(*args[2:], *args[:2]), rel=1e-7, abs=tol)


@pytest.mark.parametrize("d,n", [(64, 10), (200, 50), (32, 32)])
def test_frechet_near_singular_covariances(d, n):
    """Fewer samples than dimensions (rank-deficient covariances), plus a duplicated feature."""
    rng = np.random.default_rng(d + n)
    a = rng.standard_normal((n, d))
    b = 0.5 * rng.standard_normal((n, d)) + 0.1
    a[:, 1] = a[:, 0]
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = _scipy_frechet(a.mean(0), s1, b.mean(0), s2)
    got = frechet_distance(a.mean(0), s1, b.mean(0), s2)
    assert np.isfinite(got) and got == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a.mean(0), s1, a.mean(0), s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="sigma1 must have shape"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6), seed=st.integers(0, 2**31 - 1))
def test_feature_stats_streaming_matches_numpy(sizes, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(sizes) + 2, 5)) + 1e4  # large mean: tests cancellation
    stats = FeatureStats()
    start = 0
    for size in sizes + [2]:
        stats.update(torch.tensor(x[start:start + size], dtype=torch.float64))
        start += size
    stats = FeatureStats.from_state_dict(json.loads(json.dumps(stats.state_dict())))
    assert stats.count == len(x)
    np.testing.assert_allclose(stats.mean(), x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)


def test_feature_stats_bad_input():
    stats = FeatureStats()
    with pytest.raises(ValueError, match="no features"):
        stats.mean()
    stats.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.cov()
    with pytest.raises(ValueError, match="D=3"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        stats.update(np.zeros(3))


def _official_preprocess(video_tchw: Tensor) -> Tensor:
    """The official STDiff FVD preprocessing, written independently: (T, C, H, W) -> (3, T, 224, 224)."""
    v = video_tchw.repeat(1, 3 // video_tchw.shape[1], 1, 1).permute(1, 0, 2, 3)  # (C, T, H, W)
    h, w = v.shape[-2:]
    s = 224 / min(h, w)
    size = (224, int(np.ceil(w * s))) if h < w else (int(np.ceil(h * s)), 224)
    v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    top, left = (v.shape[-2] - 224) // 2, (v.shape[-1] - 224) // 2
    return (v[..., top:top + 224, left:left + 224] - 0.5) * 2


@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_i3d_features_follow_the_protocols(i3d_file, hw):
    torch.manual_seed(9)
    detector = load_i3d(i3d_file).detector
    videos = torch.rand(3, 4, 1, *hw)
    feats = load_i3d(i3d_file, batch_size=2)(videos)
    expected = detector(torch.stack([_official_preprocess(v) for v in videos]), rescale=False, resize=False,
                        return_features=True)
    assert feats.shape == (3, 9)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(load_i3d(i3d_file)(videos.expand(-1, -1, 3, -1, -1)), feats)
    sg = load_i3d(i3d_file, protocol="styleganv")(videos)
    expected_sg = detector(videos.expand(-1, -1, 3, -1, -1).permute(0, 2, 1, 3, 4) * 255, rescale=True, resize=True,
                           return_features=True)
    torch.testing.assert_close(sg, expected_sg, rtol=1e-5, atol=1e-6)


def test_fvd_end_to_end_matches_scipy(i3d_file):
    torch.manual_seed(10)
    features = load_i3d(i3d_file, batch_size=4)
    real = torch.rand(12, 3, 1, 32, 32)
    fake = (real + 0.3 * torch.rand_like(real)).clamp(0, 1)
    fr, ff = features(real).double().numpy(), features(fake).double().numpy()
    ref = _scipy_frechet(ff.mean(0), np.cov(ff, rowvar=False), fr.mean(0), np.cov(fr, rowvar=False))
    got = fvd(real, fake, features, batch_size=5)
    assert got > 0 and got == pytest.approx(ref, rel=1e-6)
    assert fvd(fake, real, features) == pytest.approx(got, rel=1e-9)
    assert fvd(real, real, features) == pytest.approx(0.0, abs=1e-9)


def test_i3d_missing_or_wrong_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_i3d(tmp_path / "i3d_torchscript.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a TorchScript"):
        load_i3d(tmp_path / "junk.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(nn.Linear(3, 3)).save(str(tmp_path / "linear.pt"))
    with pytest.raises(ValueError, match=r"not the StyleGAN-V I3D: its forward takes \(input\)"):
        load_i3d(tmp_path / "linear.pt")
    with pytest.raises(ValueError, match="protocol"):
        I3DFeatures(lambda x, **kw: x, protocol="tf")
    with pytest.raises(ValueError, match=r"\(2, D\)"):
        I3DFeatures(lambda x, **kw: x.mean(dim=(1, 2, 3, 4)))(torch.rand(2, 3, 1, 16, 16))
    with pytest.raises(ValueError, match=r"C = 1 or 3"):
        I3DFeatures(lambda x, **kw: x)(torch.rand(2, 3, 2, 16, 16))


# ----------------------------------------------------------------------------- bad image input


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_image_metrics_bad_input(fn):
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        fn(x, torch.rand(2, 1, 16, 17))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fn(x * 2, x)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fn(x, torch.full_like(x, float("nan")))
    with pytest.raises(TypeError, match="floating"):
        fn((x * 255).to(torch.uint8), x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(x.numpy(), x)
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., C, H, W\)"):
        fn(x[0, 0], x[0, 0])


def test_ssim_and_lpips_bad_sizes(lpips_model):
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 10, 30), torch.rand(1, 10, 30))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        lpips_model(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_model(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))
    lpips_model(torch.rand(1, 3, 31, 31), torch.rand(1, 3, 31, 31))


# ----------------------------------------------------------------------------- evaluation


def _batches(n_batches=2, n=3, s=3, t=4, seed=11):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        gt = torch.rand(n, t, 1, 32, 32, generator=g)
        noise = torch.rand(n, s, 1, 1, 1, 1, generator=g) * 0.4
        pred = (gt[:, None] + noise * torch.randn(n, s, t, 1, 32, 32, generator=g)).clamp(0, 1)
        obs = torch.rand(n, 2, 1, 32, 32, generator=g)
        out.append((pred, gt, obs))
    return out


def _make_evaluator(lpips_model, i3d_file, **kw):
    return Evaluator([5, 6, 6.5, 8], lpips=lpips_model, video_features=load_i3d(i3d_file), **kw)


def test_evaluation_report_and_resume(tmp_path, lpips_model, i3d_file):
    batches = _batches()
    full = _make_evaluator(lpips_model, i3d_file)
    for i, (pred, gt, obs) in enumerate(batches):
        full.update(pred, gt, batch_id=i, observed=obs)
    res = full.results()

    # Independent numbers: skimage PSNR per (video, sample, frame), mean and best-of-S by hand.
    pred = torch.cat([b[0] for b in batches]).double().numpy()
    gt = torch.cat([b[1] for b in batches]).double().numpy()
    n, s, t = pred.shape[:3]
    ps = _with_eps([[[sk_psnr(gt[i, k], pred[i, j, k], data_range=1.0) for k in range(t)] for j in range(s)]
                    for i in range(n)])
    best = ps[np.arange(n), ps.mean(axis=2).argmax(axis=1)]
    stats = res["metrics"]["psnr"]["statistics"]
    np.testing.assert_allclose(stats["mean_over_samples"]["per_frame"], ps.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["best_of_samples"]["per_frame"], best.mean(axis=0), rtol=1e-5)
    assert stats["best_of_samples"]["average"] >= stats["mean_over_samples"]["average"]
    lp = res["metrics"]["lpips"]["statistics"]
    assert lp["best_of_samples"]["average"] <= lp["mean_over_samples"]["average"]
    assert res["metrics"]["inter_sample_lpips"]["statistics"]["mean_over_pairs"]["average"] > 0

    # FVD with the observed frames prepended, against scipy on directly extracted features.
    features = load_i3d(i3d_file)
    real = features(torch.cat([torch.cat([b[2], b[1]], dim=1) for b in batches])).double().numpy()
    fake = features(torch.cat([torch.cat([b[2][:, None].expand(-1, s, -1, -1, -1, -1), b[0]], dim=2).flatten(0, 1)
                               for b in batches])).double().numpy()
    ref = _scipy_frechet(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
    fvd_stats = res["metrics"]["fvd"]["statistics"]
    assert fvd_stats["all_samples"]["value"] == pytest.approx(ref, rel=1e-5)
    per_index = [fvd_stats[f"sample_{k}"]["value"] for k in range(s)]
    assert fvd_stats["best_sample_index"]["value"] == min(per_index)
    assert res["num_videos"] == 6 and res["num_samples"] == 3 and res["times"] == [5.0, 6.0, 6.5, 8.0]
    assert res["uses_ground_truth"] is False and res["skipped"] == {}

    # Resume: batch 0, save, a fresh evaluator restores and finishes; identical report.
    state = tmp_path / "state.json"
    first = _make_evaluator(lpips_model, i3d_file)
    first.update(*batches[0][:2], batch_id=0, observed=batches[0][2])
    first.save_state(state)
    resumed = _make_evaluator(lpips_model, i3d_file)
    resumed.load_state(state)
    assert resumed.is_done(0) and not resumed.is_done(1)
    resumed.update(*batches[1][:2], batch_id=1, observed=batches[1][2])
    assert json.dumps(resumed.results()) == json.dumps(res)

    paths = resumed.write_report(tmp_path / "report")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(res))
    rows = list(csv.DictReader(paths["csv"].open()))
    psnr_rows = [r for r in rows if r["metric"] == "psnr" and r["statistic"] == "mean_over_samples"]
    assert [r["frame"] for r in psnr_rows] == ["0", "1", "2", "3", "all"]
    assert float(psnr_rows[2]["time"]) == 6.5
    assert any(r["metric"] == "fvd" and r["statistic"] == "all_samples" for r in rows)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["metrics.csv", "metrics.json", "metrics.png"]


def test_evaluation_without_optional_metrics(tmp_path):
    ev = Evaluator([1.0, 2.0, 3.0, 4.0])
    pred, gt, _ = _batches(n_batches=1, n=1, s=1)[0]
    ev.update(pred, gt, batch_id="a")
    res = ev.results()
    assert set(res["metrics"]) == {"psnr", "ssim"}
    assert set(res["skipped"]) == {"lpips", "inter_sample_lpips", "fvd"}
    assert ev.write_report(tmp_path)["png"].is_file()


def test_official_protocol_scores_with_official_ssim_and_is_labelled(lpips_model, tmp_path):
    pred, gt, _ = _batches(n_batches=1, n=2, s=3, t=2)[0]
    ev = Evaluator([4.0, 5.0], lpips=lpips_model, protocol="official")
    ev.update(pred, gt, batch_id=0)
    res = ev.results()
    target = gt[:, None].expand_as(pred)
    np.testing.assert_allclose(res["metrics"]["ssim"]["statistics"]["mean_over_samples"]["per_frame"],
                               ssim(pred, target, official=True).mean(dim=(0, 1)).numpy(), rtol=1e-6)
    assert res["uses_ground_truth"] is True and res["num_samples"] == 3  # no sample is dropped
    assert res["ssim"].startswith("official") and Evaluator([1.0]).ssim_variant.startswith("scikit-image")
    assert "USES GROUND TRUTH" in res["note"] and "inter_sample_lpips" in res["metrics"]
    ev.write_report(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["protocol"] == "official"


def test_evaluation_state_refused_with_other_settings(tmp_path):
    pred, gt, _ = _batches(n_batches=1, n=1, s=2, t=2)[0]
    settings = {"sampler": "ddim", "steps": 2, "checkpoint": {"sha256": "ab"}}
    ev = Evaluator([4.0, 5.0], settings=settings)
    ev.update(pred, gt, batch_id=0)
    ev.save_state(tmp_path / "state.json")
    same = Evaluator([4.0, 5.0], settings=dict(settings))
    same.load_state(tmp_path / "state.json")
    assert same.is_done(0) and same.results()["settings"] == settings
    other = Evaluator([4.0, 5.0], settings={**settings, "steps": 3, "checkpoint": {"sha256": "cd"}})
    with pytest.raises(ValueError, match=r'settings.checkpoint.sha256: "ab" -> "cd"; settings.steps: 2 -> 3'):
        other.load_state(tmp_path / "state.json")
    with pytest.raises(ValueError, match="settings must be JSON-safe"):
        Evaluator([4.0], settings={"x": float("nan")})
    with pytest.raises(TypeError, match="settings must be a dict"):
        Evaluator([4.0], settings=[1])


def test_evaluation_bad_input(tmp_path, lpips_model):
    ev = Evaluator([1, 2], lpips=lpips_model)
    pred, gt = torch.rand(2, 3, 2, 1, 32, 32), torch.rand(2, 2, 1, 32, 32)
    with pytest.raises(ValueError, match="must agree in N, T, C, H, W"):
        ev.update(pred, gt[:1], batch_id=0)
    with pytest.raises(ValueError, match="T=3 frames"):
        Evaluator([1, 2, 3]).update(pred, gt, batch_id=0)
    with pytest.raises(ValueError, match=r"\(N, S, T, C, H, W\)"):
        ev.update(pred[:, 0], gt, batch_id=0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ev.update(pred * 1.5, gt, batch_id=0)
    with pytest.raises(ValueError, match="observed must have shape"):
        ev.update(pred, gt, batch_id=0, observed=torch.rand(2, 2, 1, 32, 8))
    with pytest.raises(ValueError, match="no batch"):
        ev.results()
    ev.update(pred, gt, batch_id=0)
    with pytest.raises(ValueError, match="already accumulated"):
        ev.update(pred, gt, batch_id=0)
    with pytest.raises(ValueError, match="S=3"):
        ev.update(pred[:, :2], gt, batch_id=1)
    assert ev.num_videos == 2
    ev.save_state(tmp_path / "s.json")
    with pytest.raises(ValueError, match="different configuration"):
        Evaluator([1, 3], lpips=lpips_model).load_state(tmp_path / "s.json")
    with pytest.raises(FileNotFoundError):
        ev.load_state(tmp_path / "missing.json")
    nan_features = Evaluator([1, 2], video_features=lambda v: torch.full((v.shape[0], 4), float("nan")))
    with pytest.raises(ValueError, match="non-finite"):
        nan_features.update(pred, gt, batch_id=0)
    assert nan_features.num_videos == 0 and not nan_features.is_done(0)
    with pytest.raises(ValueError, match="strictly increasing"):
        Evaluator([2, 1])
    with pytest.raises(ValueError, match="protocol"):
        Evaluator([1], protocol="cheat")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu(weight_files, i3d_file):
    torch.manual_seed(13)
    pred, gt, obs = _batches(n_batches=1)[0]
    for fn in (psnr, ssim):
        torch.testing.assert_close(fn(pred.cuda(), gt[:, None].expand_as(pred).cuda()).cpu(),
                                   fn(pred, gt[:, None].expand_as(pred)), rtol=1e-4, atol=1e-5)
    results = []
    for device in ("cpu", "cuda"):
        ev = Evaluator([5, 6, 6.5, 8], lpips=load_lpips(weight_files["backbone"], weight_files["heads"]),
                       video_features=load_i3d(i3d_file, device=device), device=device)
        ev.update(pred, gt, batch_id=0, observed=obs)
        results.append(ev.results()["metrics"])
    for metric in ("psnr", "ssim", "lpips", "inter_sample_lpips"):
        for stat, values in results[0][metric]["statistics"].items():
            np.testing.assert_allclose(results[1][metric]["statistics"][stat]["per_frame"], values["per_frame"],
                                       rtol=1e-3, atol=1e-5)
    assert results[1]["fvd"]["statistics"]["all_samples"]["value"] == pytest.approx(
        results[0]["fvd"]["statistics"]["all_samples"]["value"], rel=1e-2, abs=1e-5)
