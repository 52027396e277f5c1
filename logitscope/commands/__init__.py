"""One module per command of `python -m logitscope`: a method's (lens, flow, steer, neurons, shift, ood: built by
logitscope.command.method_command from its declaration), rerun and tuned-lens. logitscope.cli routes to them."""
