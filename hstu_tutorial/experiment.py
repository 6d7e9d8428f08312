"""The experiment record of a run (kept importable here; the code is `hstu_tutorial.training.experiment`)."""

from hstu_tutorial.training.experiment import (
    HYPERPARAMETERS,
    SPEED_KEYS,
    RecordError,
    experiment_record,
    record_markdown,
    save_record,
)

__all__ = [
    "HYPERPARAMETERS",
    "SPEED_KEYS",
    "RecordError",
    "experiment_record",
    "record_markdown",
    "save_record",
]
