"""tafe-tf: Task Aware Feature Extraction for multi-step conversion estimation."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list:
  lines = (_HERE / name).read_text().splitlines()
  return [l.strip() for l in lines
          if l.strip() and not l.startswith(("#", "-r"))]


setuptools.setup(
    name="tafe-tf",
    version="0.1.0",
    description=("Task Aware Feature Extraction (TAFE) multi-task models for "
                 "multi-step conversion estimation, on TensorFlow/Keras."),
    long_description=(_HERE / "README.md").read_text() if (
        _HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tafe_tf", "tafe_tf.*", "data",
                                               "data.*", "launch", "launch.*"]),
    install_requires=_requirements("requirements.txt"),
    extras_require={
        "test": ["pytest>=8"],
        # The speed peer for launch.benchmark; installed with --no-deps since its
        # metadata pins an old TensorFlow (see docs/benchmarks.md).
        "benchmark": ["deepctr==0.9.4"],
    },
)
