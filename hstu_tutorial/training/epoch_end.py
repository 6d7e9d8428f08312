"""What the trainer does after each epoch: best-epoch bookkeeping, checkpoints, logs, early stopping."""

from __future__ import annotations

import functools

from hstu_tutorial.training import checkpoints, progress_bars, report
from hstu_tutorial.training.log import note


def patience_spent(trainer) -> bool:
    """Early stopping: True (with a note) after `early_stopping_patience` epochs without a better one."""
    cfg = trainer.cfg
    if not (cfg.early_stopping_patience and trainer.bad_epochs >= cfg.early_stopping_patience):
        return False
    trainer.epoch_writer.flush()  # the last epoch's line (printed once its file is written) comes before this one
    note(
        f"early stopping: no better validation {cfg.selection_metric} for "
        f"{trainer.bad_epochs} epochs (best at epoch {trainer.best['epoch']})"
    )
    return True


def after_epoch(trainer, record: dict, bar) -> None:
    """After an epoch: best epoch and its checkpoint, TensorBoard, ckpt_last.pt, the progress line."""
    cfg = trainer.cfg
    value = record["valid"][cfg.selection_metric]
    if trainer.best is None or value > trainer.best["valid"][cfg.selection_metric]:
        trainer.best = {"epoch": record["epoch"], "valid": record["valid"], "test": record["test"]}
        trainer.best_ranks = (record["epoch"], trainer.last_ranks)
        trainer.bad_epochs = 0
        if cfg.save_checkpoints:
            checkpoints.save_best(trainer, record["epoch"], background=True)
    else:
        trainer.bad_epochs += 1
    if trainer.writer is not None:  # TensorBoard, on the epoch writer's thread (epoch_writer.py)
        trainer.epoch_writer.later(functools.partial(report.log_epoch, trainer.writer, record))
    # ckpt_last.pt after every epoch (checkpoint_every = 1). Both files are copied off the device here and
    # written while the next epoch trains (epoch_writer.py); the epoch's line is printed once its
    # ckpt_last.pt is on disk, so a hard kill loses at most the epochs after the last line printed.
    line = None
    if cfg.progress and trainer.verbose and bar is None:
        line = functools.partial(progress_bars.epoch_line, record, cfg.num_epochs)
    last = trainer.epoch >= cfg.num_epochs
    if cfg.save_checkpoints and trainer.epoch % cfg.checkpoint_every == 0 and not last:
        checkpoints.save_checkpoint(trainer, trainer.run_dir / "ckpt_last.pt", background=True, then=line)
    elif line is not None and cfg.save_checkpoints and last:
        trainer.final_line = line  # fit prints it once it has written the run's last ckpt_last.pt
    elif line is not None:
        line()
    if bar is not None:
        bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            val_ndcg10=f"{record['valid'].get('ndcg@10', 0):.4f}",
            test_hr10=f"{record['test'].get('hr@10', 0):.4f}",
            refresh=False,
        )
        bar.update(1)
