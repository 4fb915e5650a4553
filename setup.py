"""Build the native extensions (the chunker; GC's per-chunk loops); everything else is
declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "chunkyard.formats._buzhash",
            sources=["src/chunkyard/formats/_buzhash.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "chunkyard.datastore._chunkfs",
            sources=["src/chunkyard/datastore/_chunkfs.c"],
            extra_compile_args=["-O2", "-pthread"],
            extra_link_args=["-pthread"],
        ),
    ]
)
