"""What every model's figures share: matplotlib on the Agg backend (no display needed) and
writing a figure to a PNG file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend; the plot modules import plt from here)


def save_figure(fig, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating its folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
