"""Cell drawings without Graphviz: matplotlib with a layered networkx layout.

``render`` (cell.py) needs Graphviz's ``dot`` program; where it is missing (a bare server, a
CI image), ``draw_png`` draws the same graph with matplotlib (already a dependency): nodes in
layers by their topological generation, top to bottom like Graphviz's ``rankdir=TB``, labelled
and coloured as in ``to_pydot``.
"""
from __future__ import annotations

import io

from nasforge.dsl.cell import Cell, CellPair, node_label

_COLOURS = {"input": "lightblue", "op": "white", "combine": "lightyellow",
            "output": "palegreen"}


def _draw_cell(ax, cell: Cell, title: str) -> None:
    import networkx as nx

    graph = cell.graph
    layered = nx.DiGraph()
    for depth, generation in enumerate(nx.topological_generations(graph)):
        for n in generation:
            layered.add_node(n, layer=depth)
    layered.add_edges_from(graph.edges())
    pos = nx.multipartite_layout(layered, subset_key="layer", align="horizontal")
    pos = {n: (x, -y) for n, (x, y) in pos.items()}  # generation 0 on top
    kinds = [graph.nodes[n]["kind"] for n in layered.nodes]
    nx.draw_networkx_edges(layered, pos, ax=ax, arrows=True, arrowsize=8, width=0.8,
                           node_size=900, edge_color="grey")
    nx.draw_networkx_nodes(layered, pos, ax=ax, node_size=900, edgecolors="black",
                           linewidths=0.6, node_color=[_COLOURS[k] for k in kinds],
                           node_shape="s")
    nx.draw_networkx_labels(layered, pos, ax=ax, font_size=6,
                            labels={n: node_label(graph.nodes[n]) for n in layered.nodes})
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def draw_png(arch: Cell | CellPair, dpi: int = 80) -> bytes:
    """PNG bytes of a cell or a (normal, reduction) pair, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [("normal cell", arch.normal), ("reduction cell", arch.reduction)] \
        if isinstance(arch, CellPair) else [(arch.name or "cell", arch)]
    import networkx as nx

    widest = max(len(g) for _, c in cells for g in nx.topological_generations(c.graph))
    fig, axes = plt.subplots(1, len(cells), figsize=(max(5.0, 1.1 * widest) * len(cells), 6),
                             dpi=dpi, squeeze=False)
    for ax, (title, cell) in zip(axes[0], cells):
        _draw_cell(ax, cell, title)
    if getattr(arch, "name", ""):
        fig.suptitle(arch.name, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
