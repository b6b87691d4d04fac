"""Shared plotting pieces: channel composites and figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from i2o_utils.data.layout import atomic_path

# Display colours per channel (Hoechst, MitoTracker, phalloidin), as in the paper's Fig 8 overlay.
CHANNEL_COLOURS = np.array([[0.2, 0.4, 1.0], [0.1, 1.0, 0.2], [1.0, 0.15, 0.15]])


def rescale(img: np.ndarray, low: float = 1.0, high: float = 99.7) -> np.ndarray:
    """Percentile contrast stretch of a 2-D image to [0, 1]."""
    img = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(img, [low, high])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def composite(field: np.ndarray) -> np.ndarray:
    """(3, H, W) field -> (H, W, 3) RGB overlay (nuclei blue, mitochondria green, actin red)."""
    chans = np.stack([rescale(c) for c in field])
    rgb = np.tensordot(chans, CHANNEL_COLOURS, axes=(0, 0))
    return np.clip(rgb, 0, 1)


def save_figure(fig: plt.Figure, path: str | Path, formats: tuple[str, ...] = ("png",), dpi: int = 110) -> list[Path]:
    """Save a figure atomically in each format (``path`` without suffix); returns the paths."""
    path = Path(path)
    out = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(target)
    return out
