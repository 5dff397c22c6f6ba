"""Build step for the optional C extension ``dataforge._jpeg`` (region-of-interest JPEG decode).

Everything else lives in pyproject.toml. The extension needs a C compiler and the
libjpeg(-turbo) headers (Debian/Ubuntu: ``libjpeg-dev``; macOS: ``brew install
jpeg-turbo``). It is optional: when it cannot be built, setuptools prints a
warning, the install still succeeds, and dataforge decodes whole images with
torchvision.io instead (``dataforge.transforms.decode.HAVE_ROI_DECODE`` tells which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dataforge._jpeg",
            sources=["dataforge/_jpeg.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
