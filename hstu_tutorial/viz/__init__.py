"""Plots for the walkthrough, one module per kind of picture. Every function returns `(fig, data)`: the
figure and the data it drew.

`data`: a dataset; `diagrams`: the STU layer, raw file -> jagged batch, the kernel's tile walk; `attention`: attention maps, masks, the jagged layout; `kernels`: the Triton kernel's
tiles and speed; `training`: curves and result tables; `perf`: speed/memory levers and scaling.
"""

from hstu_tutorial.viz.attention import (  # _short_title: notebook 02 shortens its own labels with it
    _short_title,  # noqa: F401
    attention_explorer,
    plot_attention_map,
    plot_attention_maps,
    plot_jagged_layout,
    plot_masks,
    plot_saved_attention,
    plot_time_buckets,
    user_attention_maps,
)
from hstu_tutorial.viz.data import (
    dataset_label,
    hstu_time_bucket,
    plot_distributions,
    plot_item_popularity,
    plot_padded_vs_jagged,
    plot_padding_fraction,
    plot_ratings_over_time,
    plot_sequence_lengths,
    plot_time_gaps,
)
from hstu_tutorial.viz.diagrams import (
    kernel_fwd_tiles,
    plot_jagged_pipeline,
    plot_kernel_tile_walk,
    plot_stu_layer,
    tile_walk,
)
from hstu_tutorial.viz.kernels import plot_kernel_benchmark, plot_tile_map
from hstu_tutorial.viz.perf import plot_levers, plot_remedies, plot_scaling, plot_startup, scaling_terms
from hstu_tutorial.viz.training import (
    LiveCurves,
    plot_bucket_bars,
    plot_results_bars,
    plot_seed_curves,
    plot_seed_spread,
    plot_training_curves,
    plot_where_model_wins,
    results_frame,
    where_model_wins,
)

__all__ = [
    "LiveCurves",
    "attention_explorer",
    "plot_bucket_bars",
    "plot_saved_attention",
    "plot_seed_curves",
    "dataset_label",
    "hstu_time_bucket",
    "kernel_fwd_tiles",
    "plot_attention_map",
    "plot_attention_maps",
    "plot_distributions",
    "plot_item_popularity",
    "plot_jagged_pipeline",
    "plot_jagged_layout",
    "plot_kernel_benchmark",
    "plot_kernel_tile_walk",
    "plot_levers",
    "plot_masks",
    "plot_padded_vs_jagged",
    "plot_padding_fraction",
    "plot_ratings_over_time",
    "plot_remedies",
    "plot_results_bars",
    "plot_scaling",
    "plot_startup",
    "plot_seed_spread",
    "plot_sequence_lengths",
    "plot_stu_layer",
    "plot_tile_map",
    "plot_time_buckets",
    "plot_time_gaps",
    "plot_training_curves",
    "plot_where_model_wins",
    "results_frame",
    "scaling_terms",
    "tile_walk",
    "user_attention_maps",
    "where_model_wins",
]
