"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(packages: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """Platform, CPUs, load and library versions, plus benchmark-specific facts in ``extra``."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_1_5_15min": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("rankstack", "numpy", *packages)},
        **extra,
    }
