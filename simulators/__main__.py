"""`python -m simulators` runs orconsole-sim."""
import sys

from simulators.cli import main

sys.exit(main())
