"""Exercise checks: run a learner's function on seeded random and edge cases, compare with the package.

Every exercise notebook calls one `check_<thing>(fn)` per exercise. A check

* builds seeded random cases plus edge cases (length 1, the maximum length, several heads, an empty
  history where that is legal),
* compares `fn` with the package's reference implementation (imported lazily, so a part of the package
  that is missing gives a clear message instead of an ImportError when this module is imported),
* says precisely what is wrong: wrong shape (expected vs got), the first mismatching index and both
  values, a masked (future or padding) position that leaked into the output, a known mistake recognised
  by name (missing divisor n, wrong scale, ...), gradients that differ,
* prints "not attempted yet" and returns False when `fn` still raises `NotImplementedError`, so that a
  notebook always runs top to bottom,
* on success prints a tick, ticks the learning-checklist items wired to it (`hstu_tutorial.progress`)
  and returns True.

Checks never raise for a wrong answer: they print and return a bool. The last report is kept in
`last_report` (used by the tests).

One module per exercise: `pytorch_basics` (00), `data` (01), `attention` and `relative_bias` (02), `stu` (03),
`jagged` (04), `triton_kernels` (05), `training` and `analysis` (06), `project` (07), `config_tuning` (08),
`ablation` (09);
`_common` holds the report and the comparison helpers they share.
"""

from __future__ import annotations

from . import _common
from ._common import NOT_ATTEMPTED, CheckFailed, ReferenceMissing
from .ablation import check_ablation
from .analysis import check_per_bucket
from .attention import check_hstu_attention, check_softmax_attention, check_time_bucket
from .config_tuning import check_config_file, check_gin_mapping, check_tuning
from .data import check_leave_one_out, check_user_sequences
from .jagged import check_jagged_hstu_attention, check_jagged_to_padded, check_lengths_to_offsets
from .project import check_project_results, check_ratings_table
from .pytorch_basics import (
    check_batch_gradients,
    check_masked_softmax,
    check_pairwise_scores,
    check_training_loop,
)
from .relative_bias import check_position_bias, check_relative_attention_bias, check_time_bias
from .stu import check_stu_forward
from .training import check_hr_ndcg, check_sampled_softmax_loss
from .triton_kernels import check_triton_hstu_forward, check_triton_jagged_to_padded

__all__ = [
    "NOT_ATTEMPTED",
    "CheckFailed",
    "ReferenceMissing",
    "check_ablation",
    "check_batch_gradients",
    "check_config_file",
    "check_gin_mapping",
    "check_hr_ndcg",
    "check_hstu_attention",
    "check_jagged_hstu_attention",
    "check_jagged_to_padded",
    "check_leave_one_out",
    "check_lengths_to_offsets",
    "check_per_bucket",
    "check_masked_softmax",
    "check_pairwise_scores",
    "check_position_bias",
    "check_project_results",
    "check_ratings_table",
    "check_relative_attention_bias",
    "check_sampled_softmax_loss",
    "check_softmax_attention",
    "check_stu_forward",
    "check_time_bias",
    "check_time_bucket",
    "check_training_loop",
    "check_triton_hstu_forward",
    "check_triton_jagged_to_padded",
    "check_tuning",
    "check_user_sequences",
    "last_report",
]


def __getattr__(name: str):
    # `last_report` is rebound by every check in `_common`; a copy imported here would go stale
    if name == "last_report":
        return _common.last_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
