"""losses.png: the per-step losses of a run (bounded resolution) and its held-out figures per epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nebula_keras3.artifacts import atomic_path

# losses.png plots at most this many points per series (older steps averaged in bins).
PLOT_POINTS = 2000


class LossHistory:
    """Per-step values kept in at most ``max_points`` bins for plotting (O(1) amortised per step).

    Bins hold ``width`` consecutive steps each; when the bins fill up, neighbours merge and
    ``width`` doubles, so the series keeps its whole run at a bounded resolution.
    """

    def __init__(self, keys, max_points: int = PLOT_POINTS):
        self.keys = tuple(keys)
        self.max_points = max_points
        self.width = 1
        self.steps: list[int] = []  # last step of each full bin
        self.values: list[np.ndarray] = []  # bin means, one array [len(keys)] each
        self._pending: list[np.ndarray] = []

    def add(self, step: int, row: dict) -> None:
        self._pending.append(np.array([float(row[k]) for k in self.keys]))
        if len(self._pending) == self.width:
            self.steps.append(int(step))
            self.values.append(np.mean(self._pending, axis=0))
            self._pending = []
            if len(self.steps) >= self.max_points:
                self.steps = self.steps[1::2]
                self.values = [(a + b) / 2 for a, b in zip(self.values[0::2], self.values[1::2])]
                self.width *= 2

    def series(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        values = np.array(self.values).reshape(-1, len(self.keys))
        return np.array(self.steps), {k: values[:, i] for i, k in enumerate(self.keys)}


def plot_losses(history: LossHistory, path: Path, epoch_rows=(), metric_columns=()) -> None:
    """losses.png: D and G losses per step (raw and smoothed), D(x) and D(G(z));
    plus a panel of the held-out figures per epoch when ``metric_columns`` has any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, series = history.series()
    scored = [r for r in epoch_rows if metric_columns and r.get(metric_columns[0]) not in (None, "")]
    panels = 3 if scored else 2
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3 * panels), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    window = max(1, len(steps) // 50)
    for key, color in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        y = series[key]
        ax1.plot(steps, y, color=color, alpha=0.25, linewidth=0.8)
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax1.plot(steps[window - 1 :], smooth, color=color, label=key)
    ax1.set_ylabel("loss" if history.width == 1 else f"loss (means of {history.width} steps)")
    ax1.legend()
    for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        ax2.plot(steps, series[key], label=label, linewidth=0.8)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.legend()
    if scored:
        ax3 = axes[2]
        x = [int(r["step"]) for r in scored]
        for key in metric_columns:
            ax3.plot(x, [max(float(r[key]), 1e-6) for r in scored], marker="o", label=key)
        ax3.set_yscale("log")
        ax3.set_ylabel("held-out")
        ax3.set_xlabel("step")
        ax3.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
