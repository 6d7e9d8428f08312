"""Shared figure helpers of the plotting modules."""

from __future__ import annotations


def new_axes(ax, figsize=(6.0, 3.2)):
    """`ax`'s figure and `ax`, or a new figure with one axes of `figsize` inches when `ax` is None."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, dpi=80)
    return fig, ax
