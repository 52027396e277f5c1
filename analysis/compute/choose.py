"""The backend a --ray value or the sidebar's address names: this process, or a pool of Ray actors
(analysis.compute.ray_pool; Ray itself is imported only when a pool starts)."""
from __future__ import annotations

from typing import Any

from analysis.compute.backend import PROCESS, Backend, check_address
from analysis.compute.ray_pool import ray_backend


def parse_backend(text: str | None, **options: Any) -> Backend:
    """The backend for a --ray value or the sidebar's address: None/''/'process' -> this process, else Ray."""
    if text is None or str(text).strip() in ("", "process", "none"):
        return PROCESS
    address = check_address(str(text))
    return ray_backend(address, **options)
