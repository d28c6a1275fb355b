"""The tag-distribution picture: one group of bars per tag, one bar per split."""

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from mlstack_assets.ml.sql import SPLITS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def render(table: "pd.DataFrame", path: Path) -> "Figure":
    """Draw the grouped bar chart, save it as PNG at `path`, and return the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display: pyplot is imported only after this
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    width = 0.8 / len(SPLITS)
    for offset, split in enumerate(SPLITS):
        left = [position + (offset - 1) * width for position in range(len(table))]
        axes.bar_label(axes.bar(left, table[split], width, label=split), fontsize=7, padding=1)
    axes.set_xticks(list(range(len(table))), table["tag"], rotation=20, ha="right")
    axes.set(ylabel="projects", title="Projects per tag and split")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return figure


def markdown_image(path: Path) -> str:
    """The PNG inline, as the Dagster UI renders Markdown metadata."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![Projects per tag and split](data:image/png;base64,{encoded})"
