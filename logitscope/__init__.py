"""Logitscope's command line: one module per command (lens, flow, steer, neurons, shift, ood), routed by cli."""
