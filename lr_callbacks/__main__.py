"""``python -m lr_callbacks``: the command line (see :mod:`lr_callbacks.cli`)."""

from lr_callbacks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
