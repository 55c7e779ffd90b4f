"""Dynamic batching: the requests for one model that arrive close together run as one batch.

One :class:`Batcher` per served model version, on the server's event loop:

* :meth:`Batcher.submit` puts a request's input (model input [n, C, crop, crop], n ≤ the maximum
  batch) on the model's queue; when ``max_queue`` requests wait already it is answered at once with
  503 and ``Retry-After`` (:class:`QueueFull`): the server never holds more waiting requests than
  that per model, and never hangs a client on it. A request that gives up (timed out, or its client
  gone) stops counting at once and drops its input, so dead entries never fill the queue.
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
from collections import deque
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
    x: torch.Tensor | None  # model input [n, C, crop, crop]; None once its request gave up
    size: int  # n
    future: asyncio.Future
    queued: float  # time.perf_counter() when it was put on the queue
    waiting: bool = True  # counted in Batcher.waiting: queued, not yet taken into a batch nor given up


class Batcher:
    """The queue and the batching task of one model; ``run`` maps a batch of input to its output rows.

    The queue is a deque and an event, not an ``asyncio.Queue``: the batcher waits for an arrival
    without taking anything (a wait that times out can then lose no request), and the bound is on
    ``waiting``, the requests still alive in it."""

    def __init__(self, name: str, run: Callable[[torch.Tensor], torch.Tensor], config: BatchConfig,
                 metrics: ModelMetrics | None = None) -> None:
        self.name, self.run, self.config, self.metrics = name, run, config, metrics
        self.jobs: deque[Job] = deque()
        self.waiting = 0  # jobs in the deque whose request still waits
        self.arrived: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Create the event, the worker thread and the task, on the running event loop."""
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"serve-{self.name}")
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher {self.name}")
        if self.metrics is not None:
            self.metrics.queue_depth.set_function(lambda: self.waiting)

    async def stop(self) -> None:
        """Cancel the task and fail what still waits (after the server's graceful shutdown there is nothing)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        while (job := self._pop()) is not None:
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
        if self.arrived is None:
            raise HttpError(f"{self.name}: not started yet", 503, {"Retry-After": str(RETRY_AFTER_S)})
        self.check(len(x))
        if self.waiting >= self.config.max_queue:
            raise QueueFull(self.name, self.config.max_queue)
        if len(self.jobs) > 2 * self.config.max_queue:  # stubs of requests that gave up while the model was busy
            self.jobs = deque(j for j in self.jobs if j.waiting)
        job = Job(x, len(x), asyncio.get_running_loop().create_future(), time.perf_counter())
        self.jobs.append(job)
        self.waiting += 1
        self.arrived.set()
        try:
            return await asyncio.wait_for(job.future, self.config.timeout_s)  # cancels the future on timeout
        except TimeoutError:
            raise TimedOut(self.name, self.config.timeout_s) from None
        finally:
            if job.waiting:  # gave up in the queue: it no longer counts, and its input is let go
                job.waiting, job.x = False, None
                self.waiting -= 1

    def _pop(self) -> Job | None:
        """The oldest job whose request still waits, taken off the queue; None when there is none."""
        while self.jobs:
            job = self.jobs.popleft()
            if job.waiting:
                job.waiting = False
                self.waiting -= 1
                return job
        return None

    async def _loop(self) -> None:
        carry: Job | None = None
        while True:
            jobs, carry = await self._collect(carry)
            jobs = [j for j in jobs if not j.future.done()]  # gave up while the batch was gathered
            if jobs:
                await self._run(jobs)

    async def _arrival(self, timeout: float | None) -> bool:
        """Wait for a submit (at most ``timeout`` seconds); whether one came."""
        assert self.arrived is not None
        self.arrived.clear()
        try:
            await asyncio.wait_for(self.arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _collect(self, carry: Job | None) -> tuple[list[Job], Job | None]:
        """The next batch: the first job, then those that arrive within the delay, up to the size;
        the job that would overflow it is handed back to start the next one."""
        first = carry
        while first is None:
            first = self._pop()
            if first is None:
                await self._arrival(None)
        loop = asyncio.get_running_loop()
        jobs, size = [first], first.size
        deadline = loop.time() + self.config.max_delay_ms / 1000
        while size < self.config.max_batch_size:
            job = self._pop()
            if job is None:
                if deadline <= loop.time() or not await self._arrival(deadline - loop.time()):
                    break
                continue
            if size + job.size > self.config.max_batch_size:
                return jobs, job
            jobs.append(job)
            size += job.size
        return jobs, None

    async def _run(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        x = torch.cat([j.x for j in jobs]) if len(jobs) > 1 else jobs[0].x  # type: ignore[misc]
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
                j.future.set_result(out[offset : offset + j.size])
            offset += j.size
