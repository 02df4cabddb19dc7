"""Local clusters for benchmarks and tests: worker processes on loopback ports.

:func:`run_local_workers` starts one command as every worker of a
MultiWorkerMirroredStrategy cluster on this machine (``TF_CONFIG`` per worker);
:func:`loopback_addresses` and :func:`tf_config_json` are its parts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from typing import List, Mapping, Optional, Sequence

LOCAL_WORKER_LOG = "worker-{index}.log"


def loopback_addresses(count: int) -> List[str]:
  """``count`` distinct ``127.0.0.1:<port>`` addresses free right now.

  The OS picks the ports (bind to port 0); they are released before return, so
  another process could take one before a TensorFlow server binds it: rare,
  and the cluster then fails to start with an address-in-use error.
  """
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config_json(cluster: Mapping[str, Sequence[str]], task_type: str, index: int) -> str:
  """The ``TF_CONFIG`` value making this process ``task_type:index`` of
  ``cluster`` (``{"worker": ["host:port", ...], ...}``)."""
  return json.dumps(
    {
      "cluster": {k: list(v) for k, v in cluster.items()},
      "task": {"type": task_type, "index": index},
    }
  )


def run_local_workers(
  command: Sequence[str],
  num_workers: int,
  timeout_s: float,
  log_dir: str,
  env: Optional[Mapping[str, str]] = None,
  cwd: Optional[str] = None,
) -> List[str]:
  """Runs ``command`` as every worker of a local multi-worker cluster.

  Starts ``num_workers`` processes at once, worker ``i`` with a ``TF_CONFIG``
  naming it ``worker:i`` of a cluster on free loopback ports (the command
  builds a MultiWorkerMirroredStrategy from it), and waits for all of them.
  One failing worker would leave the others blocked in a collective, so the
  first failure stops the rest.

  Args:
    command: The program and its arguments, the same for every worker.
    num_workers: Worker processes (>= 1).
    timeout_s: Seconds all of them together may take.
    log_dir: Worker ``i``'s stdout and stderr go to
      ``log_dir/worker-<i>.log`` (:data:`LOCAL_WORKER_LOG`).
    env: The workers' environment (default: this process's), plus TF_CONFIG.
    cwd: Their working directory.

  Returns:
    The workers' log texts, in worker order.

  Raises:
    TimeoutError: a worker still running after ``timeout_s``; every worker is
      killed, and the message names the unfinished ones and ends with the tail
      of the first one's log.
    RuntimeError: a worker exited non-zero (the others are killed); the
      message names it, its exit status and its log's tail.
  """
  if num_workers < 1:
    raise ValueError(f"num_workers must be >= 1, got {num_workers}")
  os.makedirs(log_dir, exist_ok=True)
  cluster = {"worker": loopback_addresses(num_workers)}
  paths = [os.path.join(log_dir, LOCAL_WORKER_LOG.format(index=i)) for i in range(num_workers)]
  base_env = dict(os.environ if env is None else env)
  procs = []
  try:
    for i, path in enumerate(paths):
      with open(path, "wb") as log:
        procs.append(
          subprocess.Popen(
            list(command),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**base_env, "TF_CONFIG": tf_config_json(cluster, "worker", i)},
          )
        )
    deadline = time.monotonic() + timeout_s
    while True:
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i = failed[0]
        raise RuntimeError(
          f"worker {i} of {num_workers} exited with status {codes[i]}; "
          f"{paths[i]} ends with:\n{_tail(paths[i])}"
        )
      running = [i for i, c in enumerate(codes) if c is None]
      if not running:
        break
      if time.monotonic() > deadline:
        raise TimeoutError(
          f"worker(s) {', '.join(map(str, running))} of {num_workers} still "
          f"running after {timeout_s:g} s (killed); {paths[running[0]]} "
          f"ends with:\n{_tail(paths[running[0]])}"
        )
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  logs = []
  for path in paths:
    with open(path, errors="replace") as f:
      logs.append(f.read())
  return logs


def _tail(path: str, num_chars: int = 3000) -> str:
  with open(path, errors="replace") as f:
    return f.read()[-num_chars:]
