"""What a run shows while it works: the epoch bar (or one line per epoch in a log) and a step bar.

* In a terminal: a tqdm bar over epochs (loss and metrics as its postfix) and, below it, a bar over the
  steps of the current epoch with its ETA. The step bar appears only once an epoch has run for
  `STEP_BAR_DELAY_S` seconds (a CPU epoch of ML-100K takes tens of seconds; a GPU epoch never shows it)
  and vanishes when the epoch ends (`leave=False`).
* In a notebook: the epoch bar only (a widget); no step bar, so saved outputs stay short.
* In a log file (stderr is not a terminal): no bar, whose carriage returns would garble the file, but
  one flushed line per epoch on stdout, written after that epoch's checkpoint.
"""

from __future__ import annotations

import sys

from hstu_tutorial.training.log import note

__all__ = ["STEP_BAR_DELAY_S", "epoch_bar", "epoch_line", "step_bar"]

STEP_BAR_DELAY_S = 3.0  # show the step bar only in epochs longer than this


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget)."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001 - any doubt: not a notebook
        return False


def _terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def epoch_bar(cfg, initial: int):
    """The bar over epochs (terminal or notebook), or None: then `epoch_line` prints one line per epoch."""
    if not (_terminal() or _in_notebook()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.num_epochs, initial=initial, desc=cfg.name, unit="epoch", dynamic_ncols=True)


def step_bar(total: int, initial: int, epoch: int):
    """A bar over one epoch's steps, shown after STEP_BAR_DELAY_S seconds, in a terminal only; or None."""
    if not _terminal():
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch}",
        unit="step",
        leave=False,
        delay=STEP_BAR_DELAY_S,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def epoch_line(record: dict, num_epochs: int) -> None:
    """One line for a finished epoch: loss, validation NDCG@10, test HR@10 and its seconds."""
    seconds = record["train_s"] + record["eval_s"]
    note(
        f"epoch {record['epoch'] + 1}/{num_epochs}: loss {record['loss']:.4f}, "
        f"valid ndcg@10 {record['valid'].get('ndcg@10', 0):.4f}, "
        f"test hr@10 {record['test'].get('hr@10', 0):.4f} ({seconds:.1f} s)"
    )
