"""dtype="auto": bfloat16 only where the device computes it natively (CPU flags mocked)."""
from __future__ import annotations

import pytest
import torch

from stdiff import Predictor
from stdiff.dtypes import auto_dtype, cpu_native_bf16, resolve_dtype
from stdiff.info import collect, render

from test_predictor import micro_model

# torch.cpu.get_capabilities() of two x86 CPUs: AVX2 only (no native bfloat16), and with AVX512-BF16
AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False,
             "cpu_name": "AMD EPYC (AVX2 only)"}
AVX512_BF16 = {**AVX2_ONLY, "avx512_f": True, "avx512_bf16": True, "cpu_name": "AMD EPYC"}
AMX = {**AVX2_ONLY, "amx_bf16": True, "amx_tile": True, "cpu_name": "Intel Xeon"}


@pytest.fixture
def cpu_flags(monkeypatch):
    """Make torch report the given CPU capabilities."""
    def use(flags: dict) -> None:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    return use


@pytest.mark.parametrize("flags", [AVX2_ONLY, {}, {"architecture": "x86_64"}, {"avx512_bf16": 0}])
def test_auto_never_picks_bf16_without_native_support(cpu_flags, flags):
    cpu_flags(flags)
    assert cpu_native_bf16() == []
    choice = auto_dtype("cpu")
    assert choice.dtype == torch.float32 and "no native bfloat16" in choice.reason
    assert resolve_dtype("auto", "cpu") == torch.float32
    p = Predictor(micro_model())                                     # the default is "auto"
    assert p.dtype == torch.float32 and p.model.unet.conv_in.weight.dtype == torch.float32
    assert Predictor(micro_model()).to("cpu").dtype == torch.float32


@pytest.mark.parametrize("flags, flag", [(AVX512_BF16, "avx512_bf16"), (AMX, "amx_bf16")])
def test_auto_picks_bf16_where_the_cpu_computes_it(cpu_flags, flags, flag):
    cpu_flags(flags)
    choice = auto_dtype("cpu")
    assert choice.dtype == torch.bfloat16 and flag in choice.reason
    p = Predictor(micro_model())
    assert p.dtype == torch.bfloat16 and p.model.unet.conv_in.weight.dtype == torch.bfloat16
    assert p.model.conv_gru.gate_conv.weight.dtype == torch.float32  # the motion path stays fp32
    assert Predictor(micro_model(), exact_reference=True).dtype == torch.float32  # the reference path is fp32
    assert Predictor(micro_model(), dtype="float32").dtype == torch.float32     # an explicit choice wins


def test_switching_precision_never_rounds_the_weights(cpu_flags):
    cpu_flags(AVX512_BF16)
    model = micro_model()
    p = Predictor(model)                                            # auto: bfloat16 here
    p.to(dtype="float16").to(dtype=torch.float32)
    for name, value in model.unet.state_dict().items():
        assert torch.equal(p.model.unet.state_dict()[name], value), name
    assert p.dtype_request == torch.float32 and p.to(dtype="auto").dtype == torch.bfloat16


def test_dtype_errors():
    with pytest.raises(ValueError, match="dtype must be 'auto'"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="dtype must be 'auto'"):
        Predictor(micro_model(), dtype=torch.float64)
    with pytest.raises(ValueError, match="float32 only"):
        Predictor(micro_model(), exact_reference=True, dtype="bfloat16")


def test_info_says_what_auto_picks_and_why(cpu_flags):
    cpu_flags(AVX2_ONLY)
    data = collect()
    assert data["dtype_auto"]["cpu"] == {"dtype": "float32", "reason": auto_dtype("cpu").reason}
    assert "AMD EPYC (AVX2 only)" in data["cpu"]
    text = render(data)
    assert "dtype auto" in text and "cpu: float32" in text and "no native bfloat16" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_follows_the_device():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert auto_dtype("cuda").dtype == expected
    assert Predictor(micro_model()).to("cuda").dtype == expected


@pytest.mark.parametrize("flags, expected", [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True)])
def test_training_bf16_auto_only_where_native(cpu_flags, flags, expected, tmp_path):
    """`bf16: auto` (the demo configuration) autocasts to bfloat16 only on a CPU that computes it natively."""
    from stdiff.training import TrainConfig
    from stdiff.training.distributed import DistInfo
    from stdiff.training.loop import _Trainer

    cpu_flags(flags)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    cfg = TrainConfig(preset="tiny", steps=2, warmup_steps=0, device="cpu", out=str(tmp_path), bf16="auto").validate()
    assert _Trainer(cfg, info).bf16 is expected
    for explicit in (True, False):  # an explicit choice wins over the CPU's flags
        assert _Trainer(TrainConfig(preset="tiny", steps=2, warmup_steps=0, bf16=explicit), info).bf16 is explicit
    with pytest.raises(ValueError, match="bf16 must be true or false, got 'maybe'"):
        TrainConfig(bf16="maybe").validate()


def test_demo_configuration_trains_in_bf16_where_native():
    """The demo configuration's bf16 lever (faster per step with AVX512-BF16, same loss curve) is 'auto'."""
    from pathlib import Path

    from stdiff.training import TrainConfig
    from stdiff.training.config import load_yaml

    yaml_path = Path(__file__).resolve().parents[1] / "benchmarks" / "tiny_demo.yaml"
    assert TrainConfig.from_dict(load_yaml(yaml_path)).bf16 == "auto"
