"""Chart of the top features: plug-in MI, its chance baseline and the score (PNG via matplotlib, HTML via plotly)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from sparsearch.errors import DataError, SpecError

_FORMATS = (".png", ".html")


def plot_ranking(ranking_df: pl.DataFrame, path: str | os.PathLike, *, top: int = 20, title: str | None = None) -> Path:
    """Write a horizontal bar chart of the ``top`` features: MI with the chance baseline drawn beside it.

    The format follows the extension: ``.png`` (matplotlib, Agg backend) or ``.html`` (plotly, self-contained).

    Example:
        >>> import polars as pl, tempfile, os
        >>> r = pl.DataFrame({"feature": ["a"], "score": [0.1], "rank": [1], "mi": [0.12], "chance_mi": [0.02]})
        >>> plot_ranking(r, os.path.join(tempfile.mkdtemp(), "r.html")).suffix
        '.html'
    """
    out = Path(path)
    ext = out.suffix.lower()
    if ext not in _FORMATS:
        raise SpecError(f"plot file must end in one of {', '.join(_FORMATS)}, got {str(out)!r}")
    need = {"feature", "score", "mi", "chance_mi"}
    missing = sorted(need - set(ranking_df.columns))
    if missing:
        raise DataError(f"ranking table lacks columns {missing}; give the output of rank_features")
    df = ranking_df.sort("rank").head(top) if "rank" in ranking_df.columns else ranking_df.head(top)
    names = df["feature"].to_list()[::-1]
    mi = df["mi"].to_list()[::-1]
    chance = df["chance_mi"].to_list()[::-1]
    score = df["score"].to_list()[::-1]
    method = df["method"][0] if "method" in df.columns and df.height else "ranking"
    title = title or f"Top {len(names)} features ({method}): MI and its chance baseline"
    out.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".html":
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_bar(y=names, x=mi, orientation="h", name="plug-in MI (nats)")
        fig.add_bar(y=names, x=chance, orientation="h", name="chance baseline (nats)")
        fig.add_scatter(y=names, x=score, mode="markers", name="score")
        fig.update_layout(title=title, barmode="group", height=200 + 28 * len(names))
        fig.write_html(str(out), include_plotlyjs=True)
        return out
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.32 * len(names)))
    ax.barh(pos + 0.2, mi, height=0.4, label="plug-in MI (nats)")
    ax.barh(pos - 0.2, chance, height=0.4, label="chance baseline (nats)")
    ax.set_yticks(pos, names)
    ax.set_xlabel("nats")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
