"""Shared by the command-line tests: the `--set` overrides of a run small enough for a test on the CPU."""

# a two-block HSTU or SASRec of width 16 on the synthetic data: a few seconds per epoch on 2 cores
TINY_SETS = [
    "max_seq_len=20",
    "embedding_dim=16",
    "dqk=16",
    "dv=16",
    "ffn_hidden=16",
    "num_negatives=16",
    "batch_size=64",
    "eval_batch_size=512",
    "device=cpu",
    "tensorboard=false",
    "timestamp_run_dir=false",
]


def set_args(*items: str) -> list[str]:
    """`"a=1", "b=2"` -> `["--set", "a=1", "--set", "b=2"]`."""
    return [arg for item in items for arg in ("--set", item)]
