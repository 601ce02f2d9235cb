"""optjax.train.launch.spawn: the processes it starts, what each is told, whose output is shown,
and that a failing or late process stops them all. The children here are small modules, not
training runs; tests/test_cli.py trains as two processes."""

import socket
import subprocess
import sys
import textwrap
import time

import pytest

from optjax.train import launch

REPORT = """
import os, sys
keys = ("OPTJAX_COORDINATOR", "OPTJAX_NUM_PROCESSES", "OPTJAX_PROCESS_ID", "OPTJAX_LOCAL_DEVICES")
print("[Gloo] Rank 0 is connected to 1 peer ranks.")
print(*[os.environ[k] for k in keys], *sys.argv[1:])
"""


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write child modules into a folder on the children's (and this process's) path."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_each_process_is_told_its_place_and_process_0_is_shown(modules, capfd):
    status = launch.spawn(["--x", "1"], 4, 8, timeout=60, module=modules("report", REPORT))
    out = capfd.readouterr().out
    assert status == 0
    coordinator, processes, index, devices, *argv = out.split()
    assert coordinator.startswith("127.0.0.1:") and int(coordinator.split(":")[1]) > 0
    assert (processes, index, devices, argv) == ("4", "0", "2", ["--x", "1"])
    assert "[Gloo]" not in out  # gloo's connection messages are dropped


def test_a_failing_process_stops_the_others_and_its_output_is_shown(modules, capfd):
    child = modules(
        "fail_one",
        """
        import os, sys, time
        if os.environ["OPTJAX_PROCESS_ID"] == "1":
            print("process 1 went wrong", file=sys.stderr)
            raise SystemExit(3)
        time.sleep(120)  # a sibling waiting on a collective that never comes
        """,
    )
    start = time.monotonic()
    status = launch.spawn([], 2, 2, timeout=100, module=child)
    assert status == 3 and time.monotonic() - start < 60
    err = capfd.readouterr().err
    assert "--- process 1 (exit 3):" in err and "process 1 went wrong" in err


def test_processes_past_the_timeout_are_stopped(modules):
    child = modules("sleeper", "import time\ntime.sleep(120)\n")
    start = time.monotonic()
    assert launch.spawn([], 2, 2, timeout=2, module=child) == 124
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    "processes, devices, message",
    [
        (0, 8, "processes must be an integer >= 1, got processes=0"),
        (-2, 8, "processes must be an integer >= 1, got processes=-2"),
        (2.0, 8, "processes must be an integer >= 1, got processes=2.0"),
        (True, 8, "processes must be an integer >= 1, got processes=True"),
        ("2", 8, "processes must be an integer >= 1, got processes='2'"),
        (2, 0, "devices must be an integer >= 1, got devices=0"),
        (2, None, "devices must be an integer >= 1, got devices=None"),
        (3, 8, r"devices must be a multiple of processes \(3\), got devices=8"),
        (4, 2, r"devices must be a multiple of processes \(4\), got devices=2"),
    ],
)
def test_spawn_refuses_bad_counts_before_starting_anything(processes, devices, message):
    with pytest.raises(ValueError, match=message):
        launch.spawn(["--steps", "1"], processes, devices, module="no_such_module_here")


def test_free_port_can_be_bound():
    port = launch.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises OSError if the port is taken


def test_processes_end_when_their_launcher_is_killed(modules, tmp_path):
    """A launcher killed outright (SIGKILL: no cleanup of its own) takes its processes with it:
    each joined jax.distributed and then waits, as on a collective that never comes."""
    child = modules(
        "joined",
        f"""
        import os, time
        from optjax.train import launch
        launch.initialize()
        open(os.path.join({str(tmp_path)!r}, f"pid{{os.getpid()}}"), "w").close()
        time.sleep(120)
        """,
    )
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from optjax.train import launch; launch.spawn([], 2, 2, module={child!r})",
        ]
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("pid*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [int(p.name[3:]) for p in tmp_path.glob("pid*")]
        assert len(pids) == 2
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """Whether the process is alive (an exited one not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False
