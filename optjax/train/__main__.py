"""``python -m optjax.train``: see optjax.train.cli."""

import sys

try:
    from optjax.train.cli import main, request_devices
except ModuleNotFoundError as error:  # without the [train] extra: one line, not a traceback
    if error.name not in ("flax", "rich"):
        raise
    print(
        f"python -m optjax.train: error: the training harness needs {error.name}, which is not "
        "installed: pip install 'optjax[train]'",
        file=sys.stderr,
    )
    raise SystemExit(2) from None

if __name__ == "__main__":
    request_devices(sys.argv[1:])  # a process of its own: its devices can still be chosen
    raise SystemExit(main())
