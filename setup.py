"""Builds sgan_fast._C: the C++ CPU kernels always, the CUDA kernels when a toolkit is found.

Environment:
  SGAN_FAST_CUDA=0      never build CUDA code
  SGAN_FAST_CUDA=1      build CUDA code, fail loudly when no toolkit is found
  (unset / "auto")      build CUDA code when a toolkit is found and torch has CUDA
  CUDA_HOME             toolkit root; defaults to /usr/local/cuda when that exists
  TORCH_CUDA_ARCH_LIST  defaults to "8.0;9.0" (A100 and H100/H200)
  MAX_JOBS              parallel compile jobs (torch's ninja build honours it)
"""

import glob
import os

from setuptools import find_packages, setup

# torch.utils.cpp_extension resolves CUDA_HOME at import time, and without it
# guesses from `which nvcc`, which on some machines points at a wrapper outside
# the toolkit (linking then fails with "cannot find -lcudart").
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    mode = os.environ.get("SGAN_FAST_CUDA", "auto").strip().lower()
    if mode not in ("0", "1", "auto", ""):
        raise RuntimeError(f"SGAN_FAST_CUDA must be 0, 1 or auto, got {mode!r}")
    home = cpp_extension.CUDA_HOME
    nvcc_ok = home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))
    torch_cuda = torch.version.cuda is not None
    if mode == "0":
        return False
    if mode == "1":
        if not nvcc_ok:
            raise RuntimeError(
                "SGAN_FAST_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the "
                f"toolkit root (looked at {home!r} and /usr/local/cuda)"
            )
        if not torch_cuda:
            raise RuntimeError(
                f"SGAN_FAST_CUDA=1 but torch {torch.__version__} was built without CUDA"
            )
        return True
    return nvcc_ok and torch_cuda


def _extension():
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    cxx = ["-O3"]
    if _want_cuda():
        print(f"sgan_fast: building CPU and CUDA kernels (CUDA_HOME={cpp_extension.CUDA_HOME}, "
              f"arch list {os.environ['TORCH_CUDA_ARCH_LIST']})")
        return cpp_extension.CUDAExtension(
            "sgan_fast._C",
            cpp + cu,
            include_dirs=[os.path.join(HERE, "csrc")],
            define_macros=[("SGAN_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo", "-std=c++17"]},
        )
    print("sgan_fast: building CPU kernels only (no CUDA toolkit, torch without CUDA, "
          "or SGAN_FAST_CUDA=0)")
    return cpp_extension.CppExtension(
        "sgan_fast._C",
        cpp,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": cxx},
    )


class BuildExt(cpp_extension.BuildExtension):
    """torch's ninja build names objects after their sources without the extension, so
    csrc/<op>.cpp and csrc/<op>.cu (one op, one name, DESIGN.md) would both become <op>.o."""

    def build_extensions(self):
        base = self.compiler.object_filenames

        def object_filenames(sources, strip_dir=0, output_dir=""):
            names = base(sources, strip_dir=strip_dir, output_dir=output_dir)
            return [n[: -len(".o")] + "_cu.o" if src.endswith(".cu") else n
                    for n, src in zip(names, sources)]

        self.compiler.object_filenames = object_filenames
        super().build_extensions()


setup(
    # every subpackage (a fixed list had fallen behind: train, models, metrics, synth), the
    # kernels from their own folder, and the presets (`--config NAME`) as package data
    packages=find_packages(include=["sgan_fast", "sgan_fast.*"]) + ["sgan_fast.kernels"],
    package_dir={"sgan_fast.kernels": "kernels"},
    package_data={"sgan_fast": ["configs/*.yaml"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
)
