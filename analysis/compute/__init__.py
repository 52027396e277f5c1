"""Where the engine's prompt-heavy work runs: this process (the default) or a pool of Ray actors (backend, choose,
ray_pool), and the generic shard plan that keeps a sharded run's batches those of the single process (sharding).
Imports core/ only. Its public API is its modules: ``from analysis.compute.backend import use_backend``.
"""
__all__ = ["backend", "choose", "ray_pool", "sharding"]
