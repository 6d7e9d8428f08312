"""Shared by the command-line tests: the `--set` overrides of a run small enough for a test on the CPU, and
the check that a bad command line fails the way a learner should see it."""

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


def cli_fails(capsys, argv, *must_contain):
    """Run `hstu-train`'s `main(argv)`: exit status 2 and exactly one stderr line `error: ...` holding
    `must_contain`, with no traceback; returns that line."""
    from hstu_tutorial.training.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for part in must_contain:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in err and "weights_only=False" not in err
    return lines[0]
