"""The layering of docs/architecture.md holds: the library stands alone.

``tafe_tf`` (the folder) imports nothing from ``data/``, ``launch/`` or
``benchmarks/`` (installed as ``tafe_tf.data``, ``tafe_tf.launch``,
``tafe_tf.benchmarks``); ``data`` never imports ``launch`` or ``benchmarks``;
no module imports the bare names ``data`` or ``launch``; no import hides
inside a function; and one installed top-level name, ``tafe_tf``.
"""

import ast
import os
import subprocess
import sys
from importlib import metadata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Folder in the repository -> the installed packages it must not import.
FORBIDDEN = {
  "tafe_tf": ("tafe_tf.data", "tafe_tf.launch", "tafe_tf.benchmarks"),
  "data": ("tafe_tf.launch", "tafe_tf.benchmarks"),
  "benchmarks": ("tafe_tf.launch",),
  "launch": (),
}
BARE = ("data", "launch", "benchmarks")


def _modules(folder):
  for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
    for name in sorted(names):
      if name.endswith(".py"):
        yield os.path.join(dirpath, name)


def _imports(path):
  """(line, imported module, inside a function?) for every import."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  out = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        out.extend((child.lineno, a.name, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom) and child.level == 0:
        out.append((child.lineno, child.module, in_function))
        out.extend((child.lineno, f"{child.module}.{a.name}", in_function) for a in child.names)
      visit(child, nested)

  visit(tree, False)
  return out


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_imports_only_what_its_layer_may(folder):
  bad = []
  for path in _modules(folder):
    rel = os.path.relpath(path, ROOT)
    for line, module, _ in _imports(path):
      top = module.split(".")[0]
      if top in BARE:
        bad.append(f"{rel}:{line}: imports the bare name {module!r}")
      for prefix in FORBIDDEN[folder]:
        if module == prefix or module.startswith(prefix + "."):
          bad.append(f"{rel}:{line}: {folder}/ may not import {module}")
  assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_imports_inside_functions(folder):
  # Imports inside functions hide cycles; optional dependencies
  # (deepctr, apache_beam, tensorflow_serving) are the one exception, each
  # guarded where it is used.
  optional = ("deepctr", "apache_beam", "tensorflow_serving", "matplotlib")
  bad = []
  for path in _modules(folder):
    if os.path.relpath(path, ROOT) == os.path.join("tafe_tf", "__init__.py"):
      continue  # selects Keras 2 before TensorFlow is imported: by design
    for line, module, inside in _imports(path):
      if inside and not module.startswith(optional):
        bad.append(f"{os.path.relpath(path, ROOT)}:{line}: {module}")
  assert not bad, "imports inside functions:\n" + "\n".join(bad)


def test_importing_the_library_loads_no_data_launch_or_benchmarks():
  code = (
    "import sys, pkgutil, importlib, tafe_tf\n"
    "for m in pkgutil.walk_packages(tafe_tf.__path__, 'tafe_tf.'):\n"
    "  if m.name.split('.')[1] not in ('data', 'launch', 'benchmarks'):\n"
    "    importlib.import_module(m.name)\n"
    "print(sorted(n for n in sys.modules if n.split('.')[:2] in "
    "(['tafe_tf', 'data'], ['tafe_tf', 'launch'], "
    "['tafe_tf', 'benchmarks']) or n in ('data', 'launch')))\n"
  )
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == "[]"


_TOP_LEVEL = """
from importlib import metadata
top = set()
for f in metadata.distribution("tafe-tf").files or ():
  first = f.parts[0]
  if first == ".." or first.startswith("__editable__"):
    continue  # console scripts; an editable install's finder and .pth
  if not first.endswith((".dist-info", ".pth")) and first != "__pycache__":
    top.add(first.removesuffix(".py"))
print(sorted(top))
import importlib.util
print([n for n in ("data", "launch", "benchmarks") if importlib.util.find_spec(n)])
"""


def test_one_installed_top_level_name():
  # From "/", so that neither the repository nor its egg-info is on the path.
  proc = subprocess.run(
    [sys.executable, "-c", _TOP_LEVEL], cwd="/", capture_output=True, text=True, timeout=60
  )
  assert proc.returncode == 0, proc.stderr
  top, bare = proc.stdout.strip().splitlines()
  assert top in ("[]", "['tafe_tf']"), top  # editable installs list no files
  assert bare == "[]", f"importable bare names: {bare}"


def test_every_console_script_names_an_entry_point_with_run():
  scripts = [
    e for e in metadata.distribution("tafe-tf").entry_points if e.group == "console_scripts"
  ]
  assert {e.name for e in scripts} >= {"tafe-train", "tafe-convert", "tafe-evaluate"}
  for e in scripts:
    module, _, function = e.value.partition(":")
    assert module.startswith("tafe_tf.launch."), e
    path = os.path.join(ROOT, "launch", module.rsplit(".", 1)[1] + ".py")
    assert os.path.isfile(path), f"{e.name}: no {path}"
    tree = ast.parse(open(path, encoding="utf-8").read())
    assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, e
