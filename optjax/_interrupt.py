"""Ctrl-C while ``python -m optjax.train`` starts: one line and status 130, no traceback.

Python imports the package ``optjax`` (and jax with it, seconds of work) before the command
line's own code runs, so a Ctrl-C in those seconds would end in a traceback through the import
machinery. When the process was started as ``python -m optjax.train`` (and nobody has replaced
Python's own SIGINT handler), ``optjax/__init__.py`` calls `quiet_interrupts_while_starting`
first, before any heavy import; the command line hands SIGINT back to Python (`restore`) once it
is ready to catch KeyboardInterrupt itself. Standard library only: it runs before anything else.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

CLI_MODULE = "optjax.train"
PROG = f"python -m {CLI_MODULE}"


def started_as_the_cli(argv: list[str] | None = None) -> bool:
    """Whether the interpreter's own arguments (``sys.orig_argv``) run ``-m optjax.train``."""
    argv = list(getattr(sys, "orig_argv", [])) if argv is None else argv
    i = 1
    while i < len(argv) and argv[i].startswith("-") and not argv[i].startswith("-c"):
        if argv[i].startswith("-m"):  # "-m optjax.train" or "-moptjax.train"
            return (argv[i][2:] or "".join(argv[i + 1 : i + 2])) == CLI_MODULE
        i += 2 if argv[i] in ("-X", "-W") else 1  # the two options that take a value
    return False  # a script, -c or no program: what follows is that program's


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    print(f"{PROG}: interrupted", file=sys.stderr)
    raise SystemExit(130)  # 128 + SIGINT, as a shell reports it; SystemExit prints nothing


def quiet_interrupts_while_starting() -> None:
    if started_as_the_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def restore() -> None:
    """Python's own SIGINT handler again (Ctrl-C raises KeyboardInterrupt), if ours is set."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
