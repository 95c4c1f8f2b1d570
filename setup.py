"""Build of stdiff: the Python packages plus the compiled op libraries.

- ``stdiff._C``: schemas of ``torch.ops.stdiff.*`` and their CPU kernels (always built);
- ``stdiff._C_cuda``: the CUDA kernels (built when torch has CUDA and nvcc is found, unless
  ``STDIFF_SKIP_CUDA_BUILD=1``); optional at run time, so CPU-only machines load ``stdiff._C`` alone.

Environment: ``CUDA_HOME`` (default ``/usr/local/cuda``, else the directory of ``nvcc`` on PATH),
``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0+PTX`` when no GPU is visible), ``MAX_JOBS`` (parallel
compile jobs, read by torch's ninja build), ``STDIFF_SKIP_CUDA_BUILD=1``.

The torch version the libraries were built against is written to ``stdiff/_C_build.json``;
``stdiff.ops._compiled`` refuses to load the libraries under another torch version.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"
BUILD_INFO = "_C_build.json"


def _packages() -> tuple[list[str], dict[str, str]]:
    """Packages under stdiff/ plus the top-level kernels/ folder installed as stdiff.kernels."""
    packages = find_packages(include=["stdiff", "stdiff.*"])
    package_dir: dict[str, str] = {}
    if (ROOT / "kernels" / "__init__.py").exists():
        packages.append("stdiff.kernels")
        packages += [f"stdiff.kernels.{name}" for name in find_packages(where=str(ROOT / "kernels"))]
        package_dir["stdiff.kernels"] = "kernels"
    return packages, package_dir


def _cuda_home() -> str | None:
    """CUDA_HOME from the environment, /usr/local/cuda, or the directory above nvcc on PATH."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home is None and Path("/usr/local/cuda/bin/nvcc").exists():
        home = "/usr/local/cuda"
    if home is None and shutil.which("nvcc") is not None:
        home = str(Path(shutil.which("nvcc")).resolve().parent.parent)
    return home if home is not None and (Path(home) / "bin" / "nvcc").exists() else None


def _want_cuda(torch_module) -> tuple[bool, str]:
    """(build the CUDA library?, why)."""
    if os.environ.get("STDIFF_SKIP_CUDA_BUILD", "0") not in ("", "0"):
        return False, "STDIFF_SKIP_CUDA_BUILD is set"
    if torch_module.version.cuda is None:
        return False, "torch was built without CUDA"
    home = _cuda_home()
    if home is None:
        return False, "nvcc not found (set CUDA_HOME)"
    os.environ["CUDA_HOME"] = home  # read by torch.utils.cpp_extension at import
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch_module.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    return True, f"nvcc in {home}, TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(visible GPUs)')}"


def _cxx_flags(module: str) -> list[str]:
    if sys.platform == "win32":
        return ["/O2", "/std:c++20", "/openmp", f"/DSTDIFF_MODULE={module}"]
    # -fopenmp: at::parallel_for is inline OpenMP code (serial without it); -ffp-contract=off: no FMA
    # contraction, so the CPU noise matches the CUDA noise bit for bit.
    return ["-O3", "-g0", "-fopenmp", "-fno-math-errno", "-ffp-contract=off", f"-DSTDIFF_MODULE={module}"]


def _link_flags() -> list[str]:
    return [] if sys.platform == "win32" else ["-fopenmp"]


def _extensions():
    import torch

    build_cuda, why = _want_cuda(torch)
    print(f"stdiff: CUDA kernels {'will' if build_cuda else 'will NOT'} be built ({why})")
    from torch.utils import cpp_extension

    cpu_sources = [
        f"{CSRC}/registration.cpp",
        f"{CSRC}/autograd.cpp",
        f"{CSRC}/python_module.cpp",
        f"{CSRC}/cpu/ops_cpu.cpp",
        f"{CSRC}/cpu/kernels_base.cpp",
        f"{CSRC}/cpu/kernels_avx2.cpp",
        f"{CSRC}/cpu/kernels_avx512.cpp",
    ]
    extensions = [
        cpp_extension.CppExtension(
            "stdiff._C", cpu_sources, extra_compile_args={"cxx": _cxx_flags("_C")}, extra_link_args=_link_flags()
        )
    ]
    if build_cuda:
        cuda_sources = [
            f"{CSRC}/python_module.cpp",
            f"{CSRC}/cuda/ops_cuda.cpp",
            f"{CSRC}/cuda/elementwise.cu",
            f"{CSRC}/cuda/spade.cu",
        ]
        extensions.append(
            cpp_extension.CUDAExtension(
                "stdiff._C_cuda",
                cuda_sources,
                extra_compile_args={"cxx": _cxx_flags("_C_cuda"), "nvcc": ["-O3", "-std=c++17"]},
            )
        )
    return extensions, build_cuda, cpp_extension.BuildExtension


def _build_ext_class(base, build_cuda: bool):
    class BuildExt(base):
        """torch's BuildExtension (ninja) that also records the torch version it built against."""

        def run(self) -> None:
            super().run()
            import torch

            info = {
                "torch": torch.__version__,
                "torch_cuda": torch.version.cuda,
                "cuda_built": build_cuda,
                "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if build_cuda else None,
            }
            target = Path(self.get_ext_fullpath("stdiff._C")).parent / BUILD_INFO
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(info, indent=1) + "\n")
            os.replace(tmp, target)
            self._stdiff_outputs = [str(target)]

        def get_outputs(self) -> list[str]:
            return super().get_outputs() + getattr(self, "_stdiff_outputs", [])

    return BuildExt


def main() -> None:
    packages, package_dir = _packages()
    extensions, build_cuda, build_extension = _extensions()
    setup(
        packages=packages,
        package_dir=package_dir,
        # the small checkpoint `stdiff demo` uses (config.json + model.safetensors of the tiny preset)
        package_data={"stdiff": ["demo_checkpoint/config.json", "demo_checkpoint/model.safetensors", "ops/schemas.def"]},
        ext_modules=extensions,
        cmdclass={"build_ext": _build_ext_class(build_extension.with_options(use_ninja=True), build_cuda)},
        zip_safe=False,
    )


main()
