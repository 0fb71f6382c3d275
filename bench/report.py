"""Markdown formatting and machine information."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence

import torch


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
             right: Sequence[bool] | None = None) -> str:
    """A GitHub Markdown table; columns flagged in ``right`` are right-aligned."""
    if right is None:
        right = [False] * len(headers)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        out = []
        for v, w, r in zip(values, widths, right, strict=True):
            out.append(v.rjust(w) if r else v.ljust(w))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True)
    ) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def fmt_ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.2f}"


def fmt_us(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e6:.0f}"


def fmt_err(x: float | None) -> str:
    return "" if x is None else f"{x:.2e}"


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> list[tuple[str, str]]:
    info = [
        ("CPU", cpu_model()),
        ("logical CPUs", str(os.cpu_count())),
    ]
    if device.startswith("cuda"):
        info.append(("GPU", f"{torch.cuda.get_device_name(device)} (CUDA "
                            f"{torch.version.cuda}); the problems live on {device}"))
    try:
        import psutil

        info.append(("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"))
    except ImportError:
        pass
    info += [
        ("torch threads", f"{torch.get_num_threads()} (torch.set_num_threads(1))"),
        ("Python", sys.version.split()[0]),
        ("torch", torch.__version__),
        ("platform", platform.platform()),
    ]
    return info
