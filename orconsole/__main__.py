"""`python -m orconsole` runs the console command line."""
import sys

from orconsole.cli import main

sys.exit(main())
