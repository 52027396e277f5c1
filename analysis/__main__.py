"""`python -m analysis <command> ...`: headless runs that write a page's bundle to a folder (see analysis.cli)."""
import sys

from analysis.cli import main

sys.exit(main())
