"""Entry script for the PyInstaller bundle: the same `orconsole` command line as the installed script."""
import sys

from orconsole.cli import main

if __name__ == "__main__":
    sys.exit(main())
