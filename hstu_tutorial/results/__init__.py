"""MovieLens-1M results of fully trained models: computed on a GPU, saved as small aggregate files, read back.

The notebooks plot these files on a CPU and recompute the same numbers live on a GPU (preset `full`) with
the same functions. What is saved is aggregate only: metrics, per-epoch curves, per-bucket tables, attention
statistics and, for the three users an attention figure shows, the titles of the films on its axes. No
ratings, no per-user histories, no per-user rows.

    runs       collect(dataset, configs, seeds): every (model, seed) trained; run_record; load_ml1m_results
    buckets    bucket_table(per_user, popularity): HR@10 / NDCG@10 by history length and target popularity
    attention  attention_record(model, dataset, users), attention_summary(model, dataset)
    sampled    sampled_vs_full(trainer): full softmax loss vs the sampled one, and rescaled by (C-1)/R
    text       the tables and the Markdown sentences the notebooks print, computed from these numbers

`benchmarks/collect_ml1m_results.py` writes the files (runs.json, buckets.csv, attention.json,
sampled_vs_full.json) to `benchmarks/results/h200_2026-12-01/ml1m/`.
"""

from hstu_tutorial.results.attention import (
    SILU_MIN,
    USER_RULE,
    attention_record,
    attention_summary,
    attention_users,
)
from hstu_tutorial.results.buckets import LENGTH_EDGES, POPULARITY_BUCKETS, bucket_table, popularity_edges
from hstu_tutorial.results.runs import (
    CONFIGS,
    DATE,
    DEFAULT_DIR,
    SEEDS,
    ML1MResults,
    collect,
    load_ml1m_results,
    machine,
    results_from_runs,
    run_record,
    runs_frames,
)
from hstu_tutorial.results.sampled import sampled_vs_full
from hstu_tutorial.results.text import (
    attention_markdown,
    bucket_gaps,
    bucket_markdown,
    sampled_markdown,
    seed_table,
)

__all__ = [
    "CONFIGS",
    "DATE",
    "DEFAULT_DIR",
    "LENGTH_EDGES",
    "POPULARITY_BUCKETS",
    "SEEDS",
    "SILU_MIN",
    "USER_RULE",
    "ML1MResults",
    "attention_markdown",
    "attention_record",
    "attention_summary",
    "attention_users",
    "bucket_gaps",
    "bucket_markdown",
    "bucket_table",
    "collect",
    "load_ml1m_results",
    "machine",
    "results_from_runs",
    "popularity_edges",
    "run_record",
    "runs_frames",
    "sampled_markdown",
    "sampled_vs_full",
    "seed_table",
]
