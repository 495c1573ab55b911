"""``python -m rollbackd``: the same entry point as the ``rollbackd`` console script.

Tests start the daemon as ``sys.executable -m rollbackd run``, so a subprocess
runs exactly the interpreter and package under test, installed or not.
"""

from rollbackd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
