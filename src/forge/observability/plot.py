"""``plot_run``: the end-of-run PNG (reward, eval accuracy, KL, entropy and step time against step)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DEFAULT_PANELS", "plot_run", "read_metrics"]

# (panel title, keys tried in order; a trailing "*" matches any key containing the text before it)
DEFAULT_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward/mean", "reward/avg", "reward/*")),
    ("eval accuracy", ("eval/accuracy", "eval/acc*", "eval/*")),
    ("KL", ("loss/kl", "loss/kl_generator", "kl*")),  # to the reference model if there is one, else to the generator
    ("entropy", ("loss/entropy", "generator/entropy", "entropy*")),
    ("step time (s)", ("time/step",)),
)


def read_metrics(jsonl_path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a ``metrics.jsonl`` written by the MetricLogger's jsonl backend."""
    rows = []
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _pick_key(rows: list[dict], candidates: tuple[str, ...]) -> str | None:
    keys = {k for r in rows for k in r}
    for cand in candidates:
        if cand.endswith("*"):
            hits = sorted(k for k in keys if cand[:-1] in k)
            if hits:
                return hits[0]
        elif cand in keys:
            return cand
    return None


def plot_run(
    jsonl_path: str | os.PathLike,
    out_png: str | os.PathLike,
    panels: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_PANELS,
    title: str | None = None,
) -> Path:
    """Plot each panel's metric against step (points where the metric was logged); returns ``out_png``.

    A panel whose metric was never logged says so instead of plotting. Uses matplotlib's Agg backend (no display).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(jsonl_path)
    if not rows:
        raise ValueError(f"{jsonl_path} holds no metric rows; nothing to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True)
    for ax, (name, candidates) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        key = _pick_key(rows, candidates)
        pts = [(r["step"], r[key]) for r in rows if key is not None and key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 40 else None, markersize=3, linewidth=1.2)
            ax.set_ylabel(name)
            ax.set_title(key, fontsize=8, loc="right")
        else:
            ax.set_ylabel(name)
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.grid(alpha=0.3)
    (axes[-1] if len(panels) > 1 else axes).set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
