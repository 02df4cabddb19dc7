"""tafe-tf: Task Aware Feature Extraction for multi-step conversion estimation.

One installed top-level package, ``tafe_tf``. The repository keeps the design
card's top level (``tafe_tf/``, ``data/``, ``launch/``, ``benchmarks/``); the
folders beside ``tafe_tf/`` install under it (``tafe_tf.data``,
``tafe_tf.launch``, ``tafe_tf.benchmarks``), so no generic module name such as
``data`` is installed or can be shadowed by a user's own folder.
"""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

# Repository folder -> installed package.
_MAPPED = {"data": "tafe_tf.data", "launch": "tafe_tf.launch", "benchmarks": "tafe_tf.benchmarks"}

# Console scripts: the absl entry points under launch/ (tests/test_layering.py
# checks that each names a module with a run()).
_SCRIPTS = {
  "tafe-train": "train",
  "tafe-convert": "convert",
  "tafe-evaluate": "evaluate",
  "tafe-export": "export",
  "tafe-predict": "predict",
  "tafe-benchmark": "benchmark",
}


def _requirements(name: str) -> list:
  lines = (_HERE / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith(("#", "-r"))]


def _packages() -> list:
  packages = setuptools.find_packages(include=["tafe_tf", "tafe_tf.*"])
  for folder, package in _MAPPED.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in setuptools.find_packages(folder)]
  return packages


def _package_dir() -> dict:
  mapping = {}
  for folder, package in _MAPPED.items():
    mapping[package] = folder
    for sub in setuptools.find_packages(folder):
      mapping[f"{package}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
  return mapping


setuptools.setup(
  name="tafe-tf",
  version="0.1.0",
  description=(
    "Task Aware Feature Extraction (TAFE) multi-task models for "
    "multi-step conversion estimation, on TensorFlow/Keras."
  ),
  long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=_packages(),
  package_dir=_package_dir(),
  install_requires=_requirements("requirements.txt"),
  entry_points={
    "console_scripts": [
      f"{script}=tafe_tf.launch.{module}:run" for script, module in _SCRIPTS.items()
    ]
  },
  extras_require={
    "test": ["pytest>=8", "ruff==0.17.6"],
    # The speed peer for launch.benchmark; installed with --no-deps since its
    # metadata pins an old TensorFlow (see docs/benchmarks.md).
    "benchmark": ["deepctr==0.9.4"],
  },
)
