"""The soak test's Locust file (run by `python -m loadtests.soak`): the load tests' user classes at
a fixed arrival rate, plus a log of every request so per-window percentiles are exact.

    SOAK_RATE_PER_USER   task runs per second per user (Locust's constant_throughput); the soak
                         sets it to rate / users, so the total is the target rate while latency
                         stays below users / rate seconds
    SOAK_REQUESTS_CSV    where to append one row per request:
                         start_epoch_s,response_ms,name,ok,error

The user classes, their rows and their response checks (wrong status or body = failure) are those
of loadtests/locust/locustfile.py; no load shape is exposed (a plain -u/-t run).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by Locust as a file: make `loadtests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ["LOADTEST_SHAPE"] = "none"  # before the import: the soak is a plain fixed-rate run

from locust import constant_throughput, events

from loadtests.locust.locustfile import (  # noqa: F401 (Locust picks the user classes from this module)
    BatchUser,
    ClassicDirectUser,
    EnsembleDirectUser,
    FeedbackUser,
    RoutedUser,
)

_RATE = float(os.environ.get("SOAK_RATE_PER_USER", "1"))
for _cls in (BatchUser, ClassicDirectUser, EnsembleDirectUser, FeedbackUser, RoutedUser):
    _cls.wait_time = constant_throughput(_RATE)
del _cls  # not a user class of its own for Locust (it picks every User it finds)


class _RequestLog:
    """Appends one CSV row per request; flushed every couple of seconds and at the end."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a", newline="") if path else None  # noqa: SIM115 (kept open for the run)
        self.writer = csv.writer(self.file) if self.file else None
        self.flushed = time.monotonic()

    def write(
        self, start: float, response_ms: float, name: str, exception: BaseException | None
    ) -> None:
        if self.writer is None:
            return
        error = (
            ""
            if exception is None
            else f"{type(exception).__name__}: {exception}"[:160].replace("\n", " ")
        )
        self.writer.writerow(
            [f"{start:.4f}", f"{response_ms:.2f}", name, 0 if exception else 1, error]
        )
        if time.monotonic() - self.flushed > 2:
            self.flush()

    def flush(self) -> None:
        if self.file:
            self.file.flush()
            self.flushed = time.monotonic()


_LOG = _RequestLog(os.environ.get("SOAK_REQUESTS_CSV"))


@events.request.add_listener
def _log_request(name, response_time, exception=None, start_time=None, **_kwargs) -> None:
    response_ms = float(response_time or 0.0)
    start = start_time if start_time is not None else time.time() - response_ms / 1000
    _LOG.write(start, response_ms, name, exception)


@events.test_stop.add_listener
def _flush(**_kwargs) -> None:
    _LOG.flush()


@events.quit.add_listener
def _close(**_kwargs) -> None:
    _LOG.flush()
