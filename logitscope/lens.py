"""`python -m logitscope lens`: the logit lens page's computation and bundle, headless."""
from __future__ import annotations

from components.reports import lens as R
from logitscope.common import one_set_command

run, add = one_set_command(
    "lens", R, R.LensSettings, demo_prompts="facts", max_prompts_flag=True,
    help="logit lens: what each layer would predict",
    description="Logit lens on A (and B side by side, with KL(A‖B) on identical tokens); writes the Logit lens "
                "page's bundle.")
