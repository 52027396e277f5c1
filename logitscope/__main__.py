"""`python -m logitscope <command> ...`: headless runs that write a page's bundle to a folder (see logitscope.cli)."""
import sys

from logitscope.cli import main

sys.exit(main())
