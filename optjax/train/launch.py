"""The harness as several processes, joined by ``jax.distributed``.

JAX runs one Python process per host (or per group of devices); every process runs the same
program on its own devices, and the collectives inside each jitted step go between processes.

- On one machine, `spawn` starts the processes itself: each gets ``devices / processes`` CPU
  devices, and they meet through a coordinator on 127.0.0.1 (on CPU the collectives go through
  gloo). ``python -m optjax.train --processes 2 --devices 8 ...`` does this.
- On a cluster (a TPU slice, SLURM, Open MPI), start the same command on every host with
  ``--distributed``: `initialize` calls ``jax.distributed.initialize()``, which finds the
  cluster's coordinator, process count and index by itself.

Every process loads the same data, makes the same batches and holds the same global arrays;
only process 0 prints and writes files.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import jax

__all__ = ["free_port", "initialize", "is_worker", "spawn"]

_COORDINATOR = "OPTJAX_COORDINATOR"
_PROCESSES = "OPTJAX_NUM_PROCESSES"
_PROCESS_ID = "OPTJAX_PROCESS_ID"
_LOCAL_DEVICES = "OPTJAX_LOCAL_DEVICES"
_LAUNCHER = "OPTJAX_LAUNCHER_PID"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_worker() -> bool:
    """Whether `spawn` started this process."""
    return _PROCESS_ID in os.environ


def initialize(distributed: bool = False) -> None:
    """Join the processes, before anything starts JAX's backend: a process `spawn` started
    joins its siblings on 127.0.0.1 with its share of CPU devices; with ``distributed``,
    ``jax.distributed.initialize()`` finds the cluster (TPU, SLURM, Open MPI) by itself.
    Otherwise nothing happens."""
    if is_worker():
        _exit_with(int(os.environ[_LAUNCHER]))
        jax.config.update("jax_num_cpu_devices", int(os.environ[_LOCAL_DEVICES]))
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            os.environ[_COORDINATOR],
            num_processes=int(os.environ[_PROCESSES]),
            process_id=int(os.environ[_PROCESS_ID]),
            initialization_timeout=120,
        )
    elif distributed:
        jax.distributed.initialize()


def _exit_with(launcher: int) -> None:
    """End this process if the one that spawned it ends first (killed, say): a worker left
    alone would wait on its siblings' collectives forever."""

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1)
        os._exit(70)

    threading.Thread(target=watch, daemon=True).start()


def _check(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")


def spawn(
    argv: Sequence[str],
    processes: int,
    devices: int,
    *,
    timeout: float | None = None,
    module: str = "optjax.train",
) -> int:
    """Run ``python -m module *argv`` as ``processes`` processes on this machine, with
    ``devices`` CPU devices in all (``devices / processes`` each), joined by jax.distributed
    through a free port on 127.0.0.1. Process 0's output is shown; the others' is kept, and
    shown if one fails. When one process fails (or ``timeout`` seconds pass) the rest are
    stopped. Returns the first failing exit status, else 0.

    Example (not run here: it trains):
        spawn(["--steps", "300", "--batch-size", "128", "--devices", "8"], 2, 8)
    """
    _check("processes", processes, 1)
    _check("devices", devices, 1)
    if devices % processes:
        raise ValueError(
            f"devices must be a multiple of processes ({processes}), got devices={devices}"
        )
    coordinator = f"127.0.0.1:{free_port()}"
    logs, children = [], []
    for i in range(processes):
        env = dict(os.environ)
        env.update(
            {
                _COORDINATOR: coordinator,
                _PROCESSES: str(processes),
                _PROCESS_ID: str(i),
                _LOCAL_DEVICES: str(devices // processes),
                _LAUNCHER: str(os.getpid()),
            }
        )
        log = tempfile.TemporaryFile()
        logs.append(log)
        stdout = subprocess.PIPE if i == 0 else subprocess.DEVNULL
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", module, *argv], env=env, stdout=stdout, stderr=log
            )
        )
    copier = threading.Thread(target=_show, args=(children[0].stdout,), daemon=True)
    copier.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    status = _wait(children, deadline)
    copier.join(timeout=10)
    for i, (child, log) in enumerate(zip(children, logs)):
        if status and child.returncode:
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            shown = [line for line in lines if not line.startswith("[Gloo]")][-40:]
            print(f"--- process {i} (exit {child.returncode}):", *shown, sep="\n", file=sys.stderr)
        log.close()
    return status


def _show(stream) -> None:
    """Copy a child's output to ours as it comes, less gloo's connection messages."""
    for line in iter(stream.readline, b""):
        if not line.startswith(b"[Gloo]"):
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
    stream.close()


def _wait(children: list[subprocess.Popen], deadline: float | None) -> int:
    """Wait for every child; on the first failure or at the deadline, stop the others."""
    status = 0
    while [child.poll() for child in children].count(None):  # polls every child
        failed = [c.returncode for c in children if c.returncode not in (None, 0)]
        late = deadline is not None and time.monotonic() > deadline
        if failed or late:
            status = failed[0] if failed else 124
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            break
        time.sleep(0.05)
    return status or next((c.returncode for c in children if c.returncode), 0)
