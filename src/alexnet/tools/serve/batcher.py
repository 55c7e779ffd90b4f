"""Dynamic batching: the requests for one model that arrive close together run as one batch.

One :class:`Batcher` per served model version, on the server's event loop:

* :meth:`Batcher.submit` puts a request's input (model input [n, C, crop, crop], n ≤ the maximum
  batch) on a bounded ``asyncio.Queue``; a full queue is answered at once with 503 and
  ``Retry-After`` (:class:`QueueFull`): the server never holds more than ``max_queue`` requests
  per model, and never hangs a client on it.
* The batcher's task takes the first request waiting, then every request that arrives within
  ``max_delay_ms`` of it, until the batch holds ``max_batch_size`` images (a request that would
  overflow it starts the next batch: requests are never split). This is Triton's dynamic batcher
  with ``max_queue_delay_microseconds``: a lone request waits at most the delay; under load the
  queue already holds the next batch when the model is free, so nobody waits for the delay.
* The batch, the inputs concatenated in queue order, runs in the model's own worker thread (the
  event loop keeps accepting and answering); each request gets back its rows of the output, in
  order, through its future.
* A request not answered within ``timeout_s`` of being queued is answered 504 (:class:`TimedOut`);
  its future is cancelled, so a batch not yet run leaves it out. A client that goes away cancels
  its future the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from alexnet.tools.serve.metrics import ModelMetrics
from alexnet.tools.web import HttpError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # what a 503 tells the client to wait


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 32  # images in one model run; a request of more is refused (400)
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for others to join it
    max_queue: int = 256  # requests waiting per model; one more is answered 503 at once
    timeout_s: float = 30.0  # a request not answered this long after it was queued is answered 504

    def __post_init__(self) -> None:
        checks = (("--max-batch-size", self.max_batch_size, self.max_batch_size >= 1, "at least 1"),
                  ("--max-delay-ms", self.max_delay_ms, 0 <= self.max_delay_ms <= 60_000, "0–60000"),
                  ("--max-queue", self.max_queue, self.max_queue >= 1, "at least 1"),
                  ("--timeout-s", self.timeout_s, 0 < self.timeout_s <= 86_400, "more than 0 and at most 86400"))
        for flag, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{flag} {value}: must be {rule}")


class QueueFull(HttpError):
    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"{name}: {limit} requests are waiting already (--max-queue); retry in {RETRY_AFTER_S} s", 503,
                         {"Retry-After": str(RETRY_AFTER_S)})


class TimedOut(HttpError):
    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"{name}: no answer within {seconds:g} s (--timeout-s); the server is busier than that", 504)


@dataclass
class Job:
    x: torch.Tensor  # model input [n, C, crop, crop]
    future: asyncio.Future
    queued: float  # time.perf_counter() when it was put on the queue


class Batcher:
    """The queue and the batching task of one model; ``run`` maps a batch of input to its output rows."""

    def __init__(self, name: str, run: Callable[[torch.Tensor], torch.Tensor], config: BatchConfig,
                 metrics: ModelMetrics | None = None) -> None:
        self.name, self.run, self.config, self.metrics = name, run, config, metrics
        self.queue: asyncio.Queue[Job] | None = None
        self.task: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Create the queue, the worker thread and the task, on the running event loop."""
        self.queue = asyncio.Queue(self.config.max_queue)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"serve-{self.name}")
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher {self.name}")
        if self.metrics is not None:
            self.metrics.queue_depth.set_function(self.queue.qsize)

    async def stop(self) -> None:
        """Cancel the task and fail what still waits (after the server's graceful shutdown there is nothing)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        while self.queue is not None and not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(HttpError(f"{self.name}: the server is shutting down", 503))
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def check(self, n: int) -> None:
        """Refuse a request of more images than a batch holds (before its images are decoded)."""
        if n > self.config.max_batch_size:
            raise HttpError(f"{self.name}: a batch of {n} is over the largest this server runs, "
                            f"{self.config.max_batch_size} (--max-batch-size); send fewer per request", 400)

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """The output rows of ``x``, computed in a batch with whatever else arrives in time."""
        if self.queue is None:
            raise HttpError(f"{self.name}: not started yet", 503, {"Retry-After": str(RETRY_AFTER_S)})
        self.check(len(x))
        job = Job(x, asyncio.get_running_loop().create_future(), time.perf_counter())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(self.name, self.config.max_queue) from None
        try:
            return await asyncio.wait_for(job.future, self.config.timeout_s)  # cancels the future on timeout
        except TimeoutError:
            raise TimedOut(self.name, self.config.timeout_s) from None

    async def _loop(self) -> None:
        carry: Job | None = None
        while True:
            jobs, carry = await self._collect(carry)
            jobs = [j for j in jobs if not j.future.done()]  # timed out or abandoned while waiting
            if jobs:
                await self._run(jobs)

    async def _collect(self, carry: Job | None) -> tuple[list[Job], Job | None]:
        """The next batch: the first job, then those that arrive within the delay, up to the size;
        the job that would overflow it is handed back to start the next one."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        first = carry if carry is not None else await self.queue.get()
        jobs, size = [first], len(first.x)
        deadline = loop.time() + self.config.max_delay_ms / 1000
        while size < self.config.max_batch_size:
            if self.queue.empty():
                wait = deadline - loop.time()
                if wait <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            if job.future.done():
                continue
            if size + len(job.x) > self.config.max_batch_size:
                return jobs, job
            jobs.append(job)
            size += len(job.x)
        return jobs, None

    async def _run(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        x = torch.cat([j.x for j in jobs]) if len(jobs) > 1 else jobs[0].x
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, x)
        except (Exception, asyncio.CancelledError) as e:  # the model failed, or the server stops: every caller is told
            if not isinstance(e, asyncio.CancelledError):
                log.warning("serve: %s failed on a batch of %d: %s", self.name, len(x), e)
            failure = e if isinstance(e, Exception) else HttpError(f"{self.name}: the server is shutting down", 503)
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(failure)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        if self.metrics is not None:
            for j in jobs:
                self.metrics.queue_seconds.observe(start - j.queued)
            self.metrics.compute_seconds.observe(time.perf_counter() - start)
            self.metrics.batch_size.observe(len(x))
        offset = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(out[offset : offset + len(j.x)])
            offset += len(j.x)
