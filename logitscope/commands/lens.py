"""`python -m logitscope lens`: the logit lens page's computation and bundle, headless."""
from __future__ import annotations

from logitscope.command import method_command

run, add = method_command(
    "lens", max_prompts_flag=True, help="logit lens: what each layer would predict",
    description="Logit lens on A (and B side by side, with KL(A‖B) on identical tokens); writes the Logit lens "
                "page's bundle.")
