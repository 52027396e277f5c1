"""`python -m logitscope flow`: the logit flow page's computation and bundle, headless."""
from __future__ import annotations

from components.reports import flow as R
from logitscope.common import one_set_command

run, add = one_set_command(
    "flow", R, R.FlowSettings, demo_prompts="two_hop",
    help="logit flow: which layers, heads and positions build the prediction",
    description="Logit flow at the last position of each prompt on A (and B, with B − A views); writes the Logit "
                "flow page's bundle.")
