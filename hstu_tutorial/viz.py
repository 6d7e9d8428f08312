"""Plots for the walkthrough. Every function returns `(fig, data)`: the figure and the data it drew."""

from __future__ import annotations

# ---- section: data plots (owner: data) -------------------------------------------------------------

# ---- section: attention maps, masks, jagged layout, explorers (owner: model core) -------------------

# ---- section: training curves and result tables (owner: training) -----------------------------------

# ---- section: performance charts (owner: performance) ------------------------------------------------
