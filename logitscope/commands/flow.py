"""`python -m logitscope flow`: the logit flow page's computation and bundle, headless."""
from __future__ import annotations

from logitscope.command import method_command

run, add = method_command(
    "flow", help="logit flow: which layers, heads and positions build the prediction",
    description="Logit flow at the last position of each prompt on A (and B, with B − A views); writes the Logit "
                "flow page's bundle.")
