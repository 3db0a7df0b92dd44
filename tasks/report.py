"""Plots for the reports under data/reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORST = 10


def plot_worst_layers(rows: list[dict[str, Any]], path: Path, note: str = "") -> None:
    """A horizontal bar chart of the layers with the largest int8 error (RMSE in quantization steps)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    worst = rows[:WORST]
    if worst:
        labels = [f"{row.get('op_name', '?')} #{row.get('tensor_idx', '?')}" for row in worst][::-1]
        values = [float(row["rmse_per_scale"]) for row in worst][::-1]
        axes.barh(labels, values, color="tab:red")
        axes.set_xlabel("RMSE / scale (quantization steps)")
        axes.set_title(f"int8 error per layer: the {len(worst)} worst (QuantizationDebugger)")
    else:
        axes.axis("off")
        axes.text(0.5, 0.5, f"no per-layer report: {note}", ha="center", va="center", wrap=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
