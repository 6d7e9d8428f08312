"""What the trainer does after each epoch: best-epoch bookkeeping, checkpoints, logs, early stopping.

An epoch ends in two halves. `queue` runs as its steps are queued: it queues the evaluation, the copy of the
metrics and the loss to the host, and the clones of what the epoch's checkpoint holds. `finish` reads the
metrics back and does the rest (history, best epoch, checkpoint files, TensorBoard, the line, the callback).

On a GPU, alone (no DistributedDataParallel) and without early stopping, the trainer calls an epoch's `finish`
only once the next epoch's steps are queued (`Trainer.overlap_epoch_end`): the host reads the metrics and does
the bookkeeping while the GPU trains, instead of the GPU waiting for the host between epochs. Nothing it reads
has moved on: the metrics and loss were copied and the checkpoint state cloned, in stream order, before the
next steps. Done in turn, with the trainer also waiting for the steps (to time them) and the evaluation, an
epoch's end left the GPU idle about 5-6 ms of every ML-1M epoch on an NVIDIA H200, whose steps and evaluation
take 45-51 ms (benchmarks/results/h200_2026-12-02/perf/epoch_overlap/).

The clocks are then CUDA events on the training stream: an epoch's train time runs from the previous epoch's
evaluation end to its last step (the GPU's own timeline, gaps included) and its eval time from there to its
evaluation's end; the bookkeeping that ran alongside the next steps is counted apart (`end_overlapped_s`),
since it took no time of the run's. Early stopping keeps the epochs in turn: a stop decided one epoch late
would have trained an epoch too many.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch

from hstu_tutorial.training import checkpoints, epoch_writer, progress_bars, report
from hstu_tutorial.training.distributed import all_reduce_mean, broadcast_from_rank0
from hstu_tutorial.training.log import note

SPLITS = ("valid", "test")


@dataclass
class EndOfEpoch:
    """An epoch whose steps and evaluation are queued (`queue`), waiting for `finish`."""

    epoch: int
    step: int  # the global step at its end
    start: float | torch.cuda.Event  # the epoch's start on its clock (host seconds or a CUDA event)
    steps_end: float | torch.cuda.Event
    done: float | torch.cuda.Event  # after its evaluation and the copies to the host
    names: list[str] = field(default_factory=list)
    # (S*M + 2,) on the host: the splits' metrics, the mean loss, the graph steps above the loss's row budget
    values: torch.Tensor | None = None
    metrics: dict | None = None  # read already (DistributedDataParallel evaluates in turn)
    loss: float | None = None
    ranks: dict = field(default_factory=dict)
    state: tuple | None = None  # epoch_writer.snapshot(checkpoints.epoch_state(trainer)), or None


def _mark(trainer, events: bool):
    """A point of the epoch's timeline: a CUDA event recorded on the current stream, or the host clock."""
    if not events:
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record(torch.cuda.current_stream(trainer.device))
    return event


def _seconds(a, b) -> float:
    return a.elapsed_time(b) / 1e3 if isinstance(a, torch.cuda.Event) else b - a


def start_mark(trainer):
    """An epoch's start on the clock its end will use: a CUDA event when its bookkeeping overlaps the next
    steps on a GPU, else the host clock."""
    return _mark(trainer, trainer.overlap_epoch_end and trainer.device.type == "cuda")


def queue(trainer, num_steps: int, start):
    """Right after an epoch's steps: its evaluation, metrics and loss on their way to the host, the clones of
    what its checkpoint holds; advances the trainer to the next epoch. A generator (it yields once, between
    queueing the evaluation and the copies, where multi_seed.py turns the other seeds); returns an EndOfEpoch.

    `start`: the epoch's start, a mark on the clock `trainer.overlap_epoch_end` implies."""
    cfg = trainer.cfg
    events = isinstance(start, torch.cuda.Event)
    cuda = trainer.device.type == "cuda"
    if not events:
        # in turn: wait for the steps (the epoch writer may work meanwhile) and time them on the host
        with trainer.epoch_writer.window():
            if cuda:  # this run's stream: other runs' streams keep going
                torch.cuda.current_stream(trainer.device).synchronize()
    steps_end = _mark(trainer, events)
    end = EndOfEpoch(trainer.epoch, trainer.global_step, start, steps_end, steps_end)
    if trainer.world > 1:
        # every rank holds the same weights: rank 0 evaluates, the others receive its metrics
        end.metrics = broadcast_from_rank0(trainer.evaluate, trainer.rank, trainer.world)
        end.loss = all_reduce_mean(trainer.epoch_loss_sum / num_steps, trainer.world).item()
        end.ranks = trainer.last_ranks
    else:
        end.names, flat = trainer.queue_metrics(SPLITS)  # (S, M) on the device
        end.ranks = trainer.last_ranks
        yield  # multi_seed.py queues the other seeds' evaluations here
        # the graph steps above the loss's row budget so far (training/loss_rows.py; no graph: none)
        overflow = trainer._loss_overflow if trainer._loss_overflow is not None else flat.new_zeros(())
        loss = trainer.epoch_loss_sum / num_steps
        values = torch.cat([flat.flatten(), *(t.reshape(1).to(flat.dtype) for t in (loss, overflow))])
        if events:  # pinned host memory, copied in stream order: read once `done` has passed
            end.values = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            end.values.copy_(values, non_blocking=True)
        else:
            end.values = values.cpu()
    end.done = _mark(trainer, events)
    trainer.epoch += 1
    trainer.step_in_epoch = 0
    if cfg.save_checkpoints and trainer.rank == 0:  # the epoch's state as it is now: the next steps change it
        end.state = epoch_writer.snapshot(checkpoints.epoch_state(trainer))
    return end


def finish(trainer, end: EndOfEpoch, bar, callback, overlapped: bool) -> str:
    """The rest of an epoch `queue` left: read its metrics back, append its record, best epoch, checkpoint
    files, TensorBoard, the progress line, `callback(record)`. A generator (it may yield while the evaluation
    is still running, for multi_seed.py); returns "completed", or "interrupted" / "early_stopped" when the run
    must stop. `overlapped`: the next epoch's steps are queued, so this bookkeeping costs the run no time."""
    if isinstance(end.done, torch.cuda.Event):
        if not end.done.query():
            yield  # the other seeds' turns (alone: nothing) while the GPU finishes this epoch
        with trainer.epoch_writer.window():  # the writer may work while this thread waits
            end.done.synchronize()
    metrics, loss = end.metrics, end.loss
    if metrics is None:
        values = end.values.tolist()
        M = len(end.names)
        metrics = {s: dict(zip(end.names, values[i * M : (i + 1) * M])) for i, s in enumerate(SPLITS)}
        loss = values[-2]
        if values[-1]:  # cannot happen unless the budget is wrong
            raise RuntimeError(
                f"epoch {end.epoch}: {int(values[-1])} graph step(s) had more supervised positions than the "
                f"loss's {trainer.loss_rows} rows (training/loss_rows.py); a bug"
            )
    t_train, t_eval = _seconds(end.start, end.steps_end), _seconds(end.steps_end, end.done)
    trainer.elapsed["train_s"] += t_train
    trainer.elapsed["eval_s"] += t_eval
    record = {
        "epoch": end.epoch,
        "loss": loss,
        "valid": metrics["valid"],
        "test": metrics["test"],
        "train_s": t_train,
        "eval_s": t_eval,
        "step": end.step,
    }
    trainer.history.append(record)
    trainer.last_ranks = end.ranks
    t_end0 = time.perf_counter()
    trainer._after_epoch(record, bar, end.state)
    key = "end_overlapped_s" if overlapped else "end_s"
    trainer.elapsed[key] = trainer.elapsed.get(key, 0.0) + time.perf_counter() - t_end0
    if callback is not None:
        callback(record)
    if trainer._interrupted:
        return "interrupted"
    if trainer._patience_spent():
        return "early_stopped"
    return "completed"


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


def after_epoch(trainer, record: dict, bar, state: tuple | None = None) -> None:
    """After an epoch: best epoch and its checkpoint, TensorBoard, ckpt_last.pt, the progress line. `state`:
    the epoch's snapshotted checkpoint state (`queue`), which the files then hold; None: the trainer's now."""
    cfg = trainer.cfg
    value = record["valid"][cfg.selection_metric]
    if trainer.best is None or value > trainer.best["valid"][cfg.selection_metric]:
        trainer.best = {"epoch": record["epoch"], "valid": record["valid"], "test": record["test"]}
        trainer.best_ranks = (record["epoch"], trainer.last_ranks)
        trainer.bad_epochs = 0
        if cfg.save_checkpoints:
            checkpoints.save_best(trainer, record["epoch"], background=True, snapshot=state)
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
    epochs_done = record["epoch"] + 1
    last = epochs_done >= cfg.num_epochs
    if cfg.save_checkpoints and epochs_done % cfg.checkpoint_every == 0 and not last:
        path = trainer.run_dir / "ckpt_last.pt"
        if state is None:
            checkpoints.save_checkpoint(trainer, path, background=True, then=line)
        else:
            checkpoints.save_epoch(trainer, state, path, then=line)
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
