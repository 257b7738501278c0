"""Figure helpers shared by the notebooks: seaborn styling, t-SNE, and saving a figure with its table."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from .config import output_root


def figures_dir(profile: str = "full", root: str | Path | None = None) -> Path:
    """``figures/`` for the full profile (committed); ``build/figures/<profile>/`` otherwise, so that a
    smoke run (CI, ``make test``) never overwrites the committed figures. Both under ``root``, by default
    ``config.output_root()`` (``$ROME_COLLAPSE_OUTPUT``, else the checkout, else the working directory)."""
    root = output_root() if root is None else Path(root)
    path = root / "figures" if profile == "full" else root / "build" / "figures" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, name: str, table: pd.DataFrame | None = None, profile: str = "full") -> Path:
    """Save ``<figures>/<name>.png`` and the table behind it as ``<name>.csv``."""
    out = figures_dir(profile) / f"{name}.png"
    fig.savefig(out, dpi=130, bbox_inches="tight")
    if table is not None:
        table.to_csv(out.with_suffix(".csv"), index=False)
    return out


def save_table(table: pd.DataFrame, name: str, profile: str = "full") -> Path:
    out = figures_dir(profile) / f"{name}.csv"
    table.to_csv(out, index=False)
    return out


def setup() -> None:
    """One look for every notebook."""
    import seaborn as sns

    matplotlib.rcParams["figure.dpi"] = 100
    sns.set_theme(style="whitegrid", context="notebook")


def tsne(points: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D openTSNE embedding; the perplexity shrinks for small point sets."""
    from openTSNE import TSNE

    points = np.asarray(points, dtype=np.float64)
    perplexity = min(perplexity, max(2.0, (len(points) - 1) / 3.0))
    return np.asarray(TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=1,
                           verbose=False).fit(points))


def show_text_table(table: pd.DataFrame, columns: list[str]):
    """A table of texts that wraps long cells and keeps whitespace visible (for continuations)."""
    from IPython.display import HTML

    styled = table[columns].style.hide(axis="index").set_properties(
        **{"text-align": "left", "white-space": "pre-wrap", "vertical-align": "top", "font-size": "0.85em"})
    return HTML(styled.to_html())
