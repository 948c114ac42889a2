"""What this machine has: versions, device, profile. Notebook 00 prints it first.

>>> sorted(environment_report())[:3]
['cpu threads', 'cuda', 'device']
"""

from __future__ import annotations

import platform


def environment_report() -> dict[str, str]:
    """Versions of the main libraries, the compute device and the active profile."""
    import importlib.metadata as md

    import torch

    from .profiles import get_profile

    report = {"python": platform.python_version()}
    for package in ["torch", "torchvision", "transformers", "numpy"]:
        try:
            report[package] = md.version(package)
        except md.PackageNotFoundError:
            report[package] = "not installed"
    report["cuda"] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        report["gpu"] = "none"
    report["cpu threads"] = str(torch.get_num_threads())
    profile = get_profile()
    report["profile"] = profile.name
    report["device"] = profile.device
    return report
