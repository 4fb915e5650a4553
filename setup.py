"""Build the native chunker extension; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "chunkyard.formats._buzhash",
            sources=["src/chunkyard/formats/_buzhash.c"],
            extra_compile_args=["-O3"],
        )
    ]
)
