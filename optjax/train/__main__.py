"""``python -m optjax.train``: see optjax.train.cli."""

from optjax.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
