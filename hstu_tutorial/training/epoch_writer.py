"""What an epoch leaves behind (checkpoint files, TensorBoard scalars, its progress line), written on a thread
of its own while the next epoch trains.

After every epoch the trainer writes ckpt_last.pt, and ckpt_best.pt when the epoch is the best so far
(checkpoints.atomic_save: a temporary file, flushed and fsync'ed, then renamed), and logs the epoch's metrics
to TensorBoard. Done in the epoch loop, that took 15-17 ms per epoch of the ML-1M runs on an NVIDIA H200
machine: 1.5-1.7 s of epochs that train and evaluate in 5.0-5.3 s, with the GPU idle meanwhile
(benchmarks/epoch_timeline.py, 2026-12-02).

`EpochWriter.submit(state, path)` clones every tensor of `state` where it lives (on a GPU: queued on the
training's stream, before the next epoch's steps, without waiting), so the file holds the epoch's values
whatever the training does next; a worker thread copies the clones to the host and writes the file.
`EpochWriter.later(fn)` queues any other work (a TensorBoard log, a printed line). The worker runs the jobs
one by one, in the order they were given.

A failed job (disk full, folder removed) is raised again in the training thread by the next `submit` or
`later`, or by `flush`; the jobs queued after it are dropped. On a GPU the worker is gated: it starts a job
only once the training thread has queued the next epoch's first `STEPS_QUEUED_FIRST` steps (`allow`) and until
that epoch's steps are done (the trainer's wait for them is a `window`), since a job holding Python's GIL while
the GPU has nothing queued holds up the queueing: ungated, the writes in the background still added 3.5-4.5 ms
to every epoch's steps (same benchmark).

`flush` waits for every job given so far: the trainer calls it before a checkpoint it writes itself
(`Trainer.save`) and at the end of `fit` (`close`, which also ends the thread; the last epoch's line is printed
after that final checkpoint); a caller that wants the files mid-run calls `Trainer.flush_epoch_files`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from hstu_tutorial.training.checkpoints import atomic_save
from hstu_tutorial.training.cuda_graph import CAPTURE_LOCK

__all__ = ["STEPS_QUEUED_FIRST", "EpochWriter", "snapshot", "to_host"]

# On a GPU the worker may start once this many of an epoch's steps are queued: the GPU then has several steps
# of work (about 2 ms each on ML-1M on an H200) while the worker takes the GIL now and then.
STEPS_QUEUED_FIRST = 4


def _map_tensors(obj, fn):
    """`obj` with every tensor t replaced by fn(t) (dicts, lists and tuples rebuilt, other values kept)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def snapshot(obj) -> tuple[object, list]:
    """(copy, ready): `obj` with every tensor cloned where it lives, so the training may change the originals
    at once. Device clones are queued on the current stream without waiting: `ready` holds (device, CUDA
    event) per device, the event recorded after them (`to_host` waits for it); [] when all is on the CPU."""
    devices = set()

    def clone(t):
        t = t.detach()
        if t.device.type == "cuda":
            devices.add(t.device)
        return t.clone()

    out = _map_tensors(obj, clone)
    ready = []
    for device in devices:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        ready.append((device, event))
    return out, ready


def to_host(copy, ready: list):
    """A `snapshot`'s copy with every tensor in CPU memory, once its device clones are complete. Holds
    `CAPTURE_LOCK` meanwhile: these waits must not happen while another thread captures a CUDA graph."""
    if not ready:
        return _map_tensors(copy, lambda t: t.cpu())
    with CAPTURE_LOCK, contextlib.ExitStack() as streams:
        for device, event in ready:
            event.synchronize()
            # a side stream: on the device's default stream the copies would queue behind the training's work
            streams.enter_context(torch.cuda.stream(torch.cuda.Stream(device)))
        return _map_tensors(copy, lambda t: t.cpu())


class EpochWriter:
    """Runs an epoch's writes on one worker thread, in submission order (module docstring)."""

    def __init__(self, gated: bool = False):
        """`gated`: the worker starts a job only after `allow()` or inside `window()`, and no longer once a window
        has ended: the trainer allows it once an epoch's first steps are queued and ends the window when that
        epoch's steps are done, so a job holding Python's GIL never keeps an idle GPU waiting for work."""
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._gated = gated
        self._open = threading.Event()
        if not gated:
            self._open.set()

    def allow(self) -> None:
        """Let the worker start jobs until the next `window` ends."""
        if not self._open.is_set():
            self._open.set()

    @contextlib.contextmanager
    def window(self):
        """Let the worker start jobs while the body runs; gated, it may not once the body is done."""
        self._open.set()
        try:
            yield
        finally:
            if self._gated:
                self._open.clear()

    def submit(self, state: dict, path: str | os.PathLike, then: Callable[[], object] | None = None) -> Path:
        """Queue `state` (snapshotted now) to be written to `path` with `atomic_save`, and `then()` to run
        once the file is in place (the trainer prints an epoch's line there: a line printed means its file is
        on disk). Raises an earlier job's error first."""
        self._raise()
        return self.submit_snapshot(*snapshot(state), path, then)  # device clones, queued now

    def submit_snapshot(
        self, copy: dict, ready: list, path: str | os.PathLike, then: Callable[[], object] | None = None
    ) -> Path:
        """`submit` for a state already snapshotted (`snapshot`'s copy and ready): the trainer clones an epoch's
        state as its steps end and hands it over once the epoch's evaluation is read back."""
        self._raise()
        path = Path(path)

        def write():
            atomic_save(to_host(copy, ready), path)
            if then is not None:
                then()

        self._put(write)
        return path

    def later(self, fn: Callable[[], object]) -> None:
        """Queue `fn()` after the jobs given so far (it must not read what the training changes). Raises an
        earlier job's error first."""
        self._raise()
        self._put(fn)

    def flush(self) -> None:
        """Wait until every queued job has run; raise the first failed job's error, if one failed."""
        if self._thread is not None:
            with self.window():
                self._jobs.join()
        self._raise()

    def close(self) -> None:
        """`flush`, then end the worker thread (a later job starts a new one)."""
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None

    @property
    def pending(self) -> int:
        """Jobs queued and not yet run."""
        return self._jobs.unfinished_tasks

    def _put(self, job: Callable[[], object]) -> None:
        if self._thread is None:
            # A daemon: a process that ends without `flush` is not held up; an unfinished write then leaves
            # the previous file in place (atomic_save writes a temporary file and renames it).
            self._thread = threading.Thread(target=self._work, name="epoch-writer", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:  # close()
                self._jobs.task_done()
                return
            self._open.wait()
            try:
                if self._error is None:  # after a failure the later jobs are dropped: flush reports it
                    job()
            except BaseException as err:  # noqa: BLE001 - handed to the training thread
                self._error = err
            finally:
                self._jobs.task_done()

    def _raise(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err
