"""Build step for the optional native extensions; everything else lives in pyproject.toml.

- ``dataforge._jpeg`` (C, region-of-interest JPEG decode) needs a C compiler and the
  libjpeg(-turbo) headers (Debian/Ubuntu: ``libjpeg-dev``; macOS: ``brew install
  jpeg-turbo``). Without it dataforge decodes whole images with torchvision.io
  (``dataforge.transforms.decode.HAVE_ROI_DECODE`` tells which).
- ``dataforge._crops`` (C++, a batch's crops resized in one call: NOTE [one native call
  per batch] in ``dataforge/_crops.cpp``) is built against the torch this Python
  imports, so only where torch is importable at build time: ``make setup`` runs
  ``python setup.py build_ext --inplace`` after the install for it (pip's isolated
  build has no torch). Without it the presets resize crop by crop, with the same pixels.

Both are optional: when one cannot be built, setuptools prints a warning and the
install still succeeds.
"""

from setuptools import Extension, setup


def _crops_extension() -> list[Extension]:
    """``dataforge._crops`` with torch's headers and libraries, or none without torch."""
    try:
        import torch
        from torch.utils.cpp_extension import include_paths, library_paths
    except ImportError:
        return []
    import sysconfig

    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    return [
        Extension(
            "dataforge._crops",
            sources=["dataforge/_crops.cpp"],
            include_dirs=include_paths() + [sysconfig.get_paths()["include"]],
            library_dirs=library_paths(),
            runtime_library_dirs=library_paths(),
            libraries=["c10", "torch", "torch_cpu", "torch_python"],
            extra_compile_args=["-O2", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
                                f'-DDATAFORGE_TORCH_VERSION="{torch.__version__}"',
                                "-DTORCH_EXTENSION_NAME=_crops", "-DTORCH_API_INCLUDE_EXTENSION_H", "-g0",
                                "-w"],
            language="c++",
            optional=True,
        )
    ]


setup(
    ext_modules=[
        Extension(
            "dataforge._jpeg",
            sources=["dataforge/_jpeg.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        *_crops_extension(),
    ]
)
