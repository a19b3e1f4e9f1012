"""Tell operators about rollout decisions: a webhook of Slack-compatible JSON, with retries.

The users' plan asks to "notify stakeholders of rollback and reasons". Only the replica holding the
controller lease sends (it is the one that made the decision), so each decision is announced once.
Sending never blocks the caller: messages go through a bounded queue to one worker thread, which
retries each with exponential back-off and gives up (logged, counted) after `max_attempts`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from serving.config.secrets import webhook_url_problem

log = logging.getLogger(__name__)

NOTIFY_ACTIONS = frozenset({"promote", "rollback", "kill_switch", "hold"})
"""Decision actions announced; a "hold" only when its reasons change (the log already dedups)."""

_ICONS = {"promote": ":rocket:", "rollback": ":rotating_light:", "kill_switch": ":octagonal_sign:"}


def slack_message(decision: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack-compatible body (`text`, plus the decision itself for other receivers)."""
    action = str(decision.get("action", "?"))
    state = decision.get("state") or {}
    reasons = "; ".join(str(r) for r in decision.get("reasons", [])) or "no reason given"
    text = (
        f"{_ICONS.get(action, ':information_source:')} rollout {action}: ensemble at "
        f"{state.get('percentage', '?')}% — {reasons}"
    )
    return {"text": text, "decision": dict(decision)}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not a hop: following it would send the decision (and whatever the
    URL's owner put in it) to a host nobody configured, or down to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913
        raise urllib.error.HTTPError(
            req.full_url, code, "webhook redirects are not followed", headers, fp
        )


_OPENER = urllib.request.build_opener(_NoRedirects)
"""urllib's opener without redirects (and without file:// or ftp:// use: the URL is checked)."""


def post_json(url: str, body: Mapping[str, Any], timeout_s: float = 5.0) -> None:
    """POST `body` as JSON; raises on a refused URL (not https, nor http to loopback), a network
    error, a redirect or a non-2xx answer."""
    if (problem := webhook_url_problem(url)) is not None:
        raise ValueError(f"webhook URL {problem}")
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    with _OPENER.open(request, timeout=timeout_s) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(
                url, response.status, "webhook refused", response.headers, None
            )


class Notifier:
    """Queue decisions for a webhook; one worker delivers them in order, with retries."""

    def __init__(
        self,
        url: str | None,
        max_attempts: int = 5,
        first_backoff_s: float = 0.5,
        max_queue: int = 1000,
        send: Callable[[str, Mapping[str, Any]], None] = post_json,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if url and (problem := webhook_url_problem(url)) is not None:
            raise ValueError(f"webhook URL {problem}")
        self.url = url
        self.max_attempts = max_attempts
        self.first_backoff_s = first_backoff_s
        self._send = send
        self._sleep = sleep
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queue)
        self.sent = 0
        self.failed = 0
        self._worker: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def announce(self, decision: Mapping[str, Any]) -> bool:
        """Queue a decision if it is worth telling; False when not sent (disabled, not an
        announced action, or the queue is full — logged)."""
        if not self.enabled or decision.get("action") not in NOTIFY_ACTIONS:
            return False
        self._start()
        try:
            self._queue.put_nowait(slack_message(decision))
        except queue.Full:
            self.failed += 1
            log.error("notifier queue full: rollout %s not announced", decision.get("action"))
            return False
        return True

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued messages are delivered or given up (shutdown, tests)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _start(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="notifier", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            try:
                if message is not None:
                    self._deliver(message)
            finally:
                self._queue.task_done()

    def _deliver(self, message: dict[str, Any]) -> None:
        backoff = self.first_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._send(self.url, message)  # type: ignore[arg-type]
                self.sent += 1
                return
            except Exception as exc:  # network, HTTP status, anything: retry, then give up
                log.warning("webhook attempt %d/%d failed: %s", attempt, self.max_attempts, exc)
                if attempt < self.max_attempts:
                    self._sleep(backoff)
                    backoff *= 2
        self.failed += 1
        log.error("webhook gave up after %d attempts: %s", self.max_attempts, message["text"])
