"""The decision webhook: Slack-compatible body, retries with back-off, gives up, never blocks."""

from __future__ import annotations

import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.delivery.notify import Notifier, post_json, slack_message
from tests.support import WebhookReceiver

ROLLBACK = {"action": "rollback", "reasons": ["accuracy dropped"], "state": {"percentage": 25.0}}


def test_message_names_the_action_stage_and_reasons():
    body = slack_message(ROLLBACK)
    assert "rollback" in body["text"] and "25.0%" in body["text"]
    assert "accuracy dropped" in body["text"] and body["decision"]["action"] == "rollback"


def test_retries_with_backoff_then_delivers_once():
    attempts, sleeps = [], []

    def flaky(url, body):
        attempts.append(body)
        if len(attempts) < 3:
            raise ConnectionError("down")

    notifier = Notifier("https://hook", send=flaky, sleep=sleeps.append, first_backoff_s=0.5)
    assert notifier.announce(ROLLBACK)
    notifier.drain()
    assert len(attempts) == 3 and sleeps == [0.5, 1.0]
    assert (notifier.sent, notifier.failed) == (1, 0)


def test_gives_up_after_max_attempts_and_skips_unannounced_actions():
    def down(url, body):
        raise ConnectionError("down")

    notifier = Notifier("https://hook", send=down, sleep=lambda s: None, max_attempts=3)
    assert not notifier.announce({"action": "none"})
    assert notifier.announce(ROLLBACK)
    notifier.drain()
    assert (notifier.sent, notifier.failed) == (0, 1)
    assert not Notifier(None).announce(ROLLBACK)  # no URL: disabled


def test_post_json_reaches_a_real_local_receiver():
    receiver = WebhookReceiver()
    try:
        post_json(receiver.url, slack_message(ROLLBACK))
    finally:
        receiver.close()
    assert receiver.actions() == ["rollback"]


def test_only_https_or_loopback_http_and_never_a_file():
    for url in ("file:///etc/passwd", "http://hooks.example/x", "ftp://h/x", "gopher://h", "x"):
        with pytest.raises(ValueError, match="https"):
            Notifier(url)
        with pytest.raises(ValueError, match="https"):
            post_json(url, slack_message(ROLLBACK))
    for url in ("https://hooks.example/x", "http://127.0.0.1:9/x", "http://localhost/x"):
        assert Notifier(url).enabled


def test_a_redirect_is_refused_not_followed():
    """A webhook answering 307 to another host (here: a second local receiver) must not make the
    notifier re-post the decision there."""
    target = WebhookReceiver()

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", target.url)
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        with pytest.raises(urllib.error.HTTPError, match="redirect"):
            post_json(f"http://127.0.0.1:{redirector.server_port}/hook", slack_message(ROLLBACK))
    finally:
        redirector.shutdown()
        target.close()
    assert target.received == []
