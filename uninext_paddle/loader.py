"""The batches the scripts read: a data loader whose worker processes hand back NumPy arrays and whose failures
end the iteration with one ``DataError``, never a hang.

Why not ``paddle.io.DataLoader``: in Paddle 3.3.1 a Paddle tensor made in a worker process (the notebook's
``ToTensor``) and sent back through its shared-memory pickler crashes workers at small batches ("Tensor's
dimension is out of bound") and segfaults after a few epochs at others; a dead worker or an exception in one
then hangs the main process or surfaces as ``SystemError: Blocking queue is killed``, and without workers an
exception in a dataset item hangs it. Here:

- Worker processes (forked, as Paddle's are on Linux, one set per pass over the data) read and transform the
  images with NumPy and OpenCV only and send the batch back as NumPy arrays; ``paddle.to_tensor`` makes the
  tensors in this process. The values and dtypes are those Paddle's loader gives.
- Batches come in the sampler's order whatever the number of workers: batch k is loaded by worker k mod n, each
  worker holds ``PREFETCH`` batches in hand.
- An exception in a dataset item reaches the loop as a ``DataError``: a ``UninextError`` keeps its own one-line
  message (an unreadable image names its file), anything else is named with the items it came from.
- A worker that dies (killed, out of memory, a crash in native code) ends the iteration within
  ``POLL_SECONDS`` with a ``DataError`` naming how it ended; no batch for ``timeout`` seconds, likewise.
- Workers ignore SIGINT and SIGTERM (the main process decides when to stop, at a batch boundary), die with the
  main process (Linux: ``PR_SET_PDEATHSIG``), and are killed when an iteration ends early.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import pickle
import queue
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import paddle

from .errors import DataError, UninextError

__all__ = ["PREFETCH", "POLL_SECONDS", "STALL_SECONDS", "BatchLoader", "make_loader", "load_batch"]

PREFETCH = 2  # batches each worker has in hand (Paddle's prefetch_factor)
POLL_SECONDS = 0.5  # how often a wait for a batch checks that its worker is alive
STALL_SECONDS = 300.0  # no batch for this long from a live worker: the loader is stuck
_JOIN_SECONDS = 2.0  # a finished worker's time to exit before it is killed
_PR_SET_PDEATHSIG = 1  # prctl(2)
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def load_batch(dataset: Any, indices: Sequence[int]) -> list[np.ndarray]:
    """Items ``indices`` of ``dataset`` stacked field by field into NumPy arrays ([B, ...] each), as Paddle's
    default collate stacks them. A ``UninextError`` of an item passes as it is; any other exception becomes a
    ``DataError`` naming the items."""
    try:
        items = [dataset[i] for i in indices]
        fields = [item if isinstance(item, (tuple, list)) else (item,) for item in items]
        return [np.stack([np.asarray(field[k]) for field in fields]) for k in range(len(fields[0]))]
    except UninextError:
        raise
    except Exception as err:  # a transform failing on odd data, a dataset bug: one line, the cause chained
        raise DataError(f"loading items {indices[0]}..{indices[-1]} of the data set failed "
                        f"({type(err).__name__}: {err})") from err


class BatchLoader:
    """Batches of ``dataset`` as lists of Paddle tensors on the current device ([images, labels] for the
    project's data sets), loaded by ``num_workers`` worker processes (0: in this process).

    Args:
        dataset: items ``dataset[i]``: arrays or numbers, or tuples of them (NumPy: see the module doc).
        batch_size, shuffle, drop_last: as ``paddle.io.DataLoader``'s, when no ``batch_sampler`` is given.
        batch_sampler: yields the index lists of the batches (e.g. ``data.EpochBatchSampler``).
        num_workers: worker processes; 0 loads in this process.
        timeout: seconds without a batch from a live worker before the loader gives up (``DataError``).
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 batch_sampler: Iterable[Sequence[int]] | None = None, num_workers: int = 0,
                 timeout: float = STALL_SECONDS) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must not be negative, got {num_workers}")
        self.dataset = dataset
        self.batch_sampler = batch_sampler or paddle.io.BatchSampler(dataset, batch_size=batch_size,
                                                                     shuffle=shuffle, drop_last=drop_last)
        self.batch_size = self.batch_sampler.batch_size
        self.num_workers, self.timeout = num_workers, timeout

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[paddle.Tensor]]:
        if self.num_workers == 0:
            arrays = (load_batch(self.dataset, indices) for indices in self.batch_sampler)
        else:
            arrays = _Workers(self.dataset, self.num_workers, self.timeout).batches(self.batch_sampler)
        for batch in arrays:
            yield [paddle.to_tensor(array) for array in batch]


def make_loader(dataset: Any, batch_size: int, num_workers: int, batch_sampler: Any = None) -> BatchLoader:
    """The loader every script uses: ``dataset`` in order in batches of ``batch_size`` (the last one partial),
    or the batches of ``batch_sampler`` when given."""
    return BatchLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, batch_sampler=batch_sampler,
                       num_workers=num_workers)


def _start_worker() -> None:
    """A worker process's settings: stop signals are the main process's business (they were blocked across the
    fork, so none arrives before they are ignored), and it dies with the main process."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):  # not Linux: the main process still kills its workers when it ends
            pass


def _work(dataset: Any, tasks: Any, results: Any) -> None:
    """A worker's loop: (sequence number, indices) in, (sequence number, arrays or the DataError) out, until None."""
    _start_worker()
    while (task := tasks.get()) is not None:
        number, indices = task
        try:
            outcome: Any = load_batch(dataset, indices)
        except UninextError as err:
            outcome = err
        try:
            pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 (an exception that cannot travel goes as its text)
            outcome = DataError(str(outcome))
        results.put((number, outcome))
    results.close()
    results.join_thread()


def _ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


class _Workers:
    """One pass's worker processes: batch k goes to worker k mod n, results are read back in order."""

    def __init__(self, dataset: Any, count: int, timeout: float) -> None:
        context = multiprocessing.get_context("fork")
        self.tasks = [context.SimpleQueue() for _ in range(count)]
        self.results = [context.Queue() for _ in range(count)]
        self.processes = [context.Process(target=_work, args=(dataset, t, r), daemon=True, name=f"loader-{i}")
                          for i, (t, r) in enumerate(zip(self.tasks, self.results))]
        self.timeout = timeout
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # delivered here once they have started
        try:
            for process in self.processes:
                process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def batches(self, batch_sampler: Iterable[Sequence[int]]) -> Iterator[list[np.ndarray]]:
        """The arrays of each batch of ``batch_sampler``, in order; the workers end with the generator."""
        self._pending, self._sent = iter(batch_sampler), 0
        try:
            for _ in range(len(self.processes) * PREFETCH):  # fill every worker's hands
                self._send_next()
            received = 0
            while received < self._sent:
                batch = self._receive(received % len(self.processes), received)
                received += 1
                self._send_next()
                yield batch
            self._finish()
        finally:
            self._kill()

    def _send_next(self) -> None:
        """Give the sampler's next batch, if any, to the worker whose turn it is."""
        indices = next(self._pending, None)
        if indices is not None:
            self.tasks[self._sent % len(self.processes)].put((self._sent, list(indices)))
            self._sent += 1

    def _receive(self, worker: int, number: int) -> list[np.ndarray]:
        """Batch ``number`` from ``worker``, or ``DataError`` when the worker died, stalled or the batch failed."""
        waited = 0.0
        while True:
            try:
                got, outcome = self.results[worker].get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                process = self.processes[worker]
                if not process.is_alive():
                    raise DataError(f"data loader worker {worker} (pid {process.pid}) {_ended(process.exitcode)} "
                                    f"while loading batch {number}; if the system ran out of memory, use fewer "
                                    "workers") from None
                waited += POLL_SECONDS
                if waited >= self.timeout:
                    raise DataError(f"data loader worker {worker} (pid {process.pid}) delivered no batch for "
                                    f"{self.timeout:.0f} s (batch {number})") from None
        if got != number:  # a worker answers its tasks in the order it got them
            raise DataError(f"data loader worker {worker} sent batch {got} where batch {number} was due")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _finish(self) -> None:
        """Tell the workers there is no more work and give them a moment to exit."""
        for tasks in self.tasks:
            tasks.put(None)
        deadline = time.monotonic() + _JOIN_SECONDS
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))

    def _kill(self) -> None:
        """Kill the workers still running (an iteration that ended early, or one that hung) and free the queues."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join()
            process.close()
        for results in self.results:
            results.close()
            results.cancel_join_thread()
        for tasks in self.tasks:
            tasks.close()
