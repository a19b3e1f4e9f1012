"""Secrets in settings: blank is unset, only spaces and tabs are stripped, a bad value is refused
without being shown, and redaction hides known values (issue 24, item 4)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.config.secrets import presented, redact, url_password
from serving.config.settings import ServingSettings


@pytest.mark.parametrize("blank", ["", " ", "\t \t", "\xa0", " \xa0 ", "\n"])
def test_blank_tokens_are_unset(monkeypatch, blank):
    for name in ("ADMIN_TOKEN", "VIEWER_TOKEN", "USER_TOKEN_SECRET", "REQUEST_ID_SECRET"):
        monkeypatch.setenv(f"SERVING_{name}", blank)
    settings = ServingSettings()
    assert settings.admin_token is None and settings.viewer_token is None
    assert settings.user_token_secret is None and settings.request_id_secret is None


def test_only_spaces_and_tabs_are_stripped():
    assert ServingSettings(admin_token=" \tadmin-x\t ").admin_token.get_secret_value() == "admin-x"
    assert (
        ServingSettings(admin_token="\xa0admin-x").admin_token.get_secret_value() == "\xa0admin-x"
    )
    assert presented(" \ttok\t") == "tok" and presented("\xa0tok") == "\xa0tok"
    assert presented("\xa0") is None and presented(" \t ") is None and presented(None) is None


def test_a_secret_with_a_newline_refuses_to_start_without_showing_it():
    with pytest.raises(ValidationError) as caught:
        ServingSettings(admin_token="admin-Pa55\nword")
    assert "admin-Pa55" not in str(caught.value) and "control characters" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "http://hooks.example/T0/secret-path", "ftp://x/y", "nope"]
)
def test_a_webhook_that_is_not_https_refuses_to_start(url):
    with pytest.raises(ValidationError) as caught:
        ServingSettings(webhook_url=url)
    assert "https" in str(caught.value) and "secret-path" not in str(caught.value)


def test_https_and_loopback_webhooks_and_blank_is_off():
    assert ServingSettings(webhook_url="https://hooks.example/x").webhook_url
    assert ServingSettings(webhook_url="http://127.0.0.1:8080/x").webhook_url
    assert ServingSettings(webhook_url=" ").webhook_url is None


def test_redaction_of_known_values_and_the_database_password():
    url = "postgresql+psycopg://serving:pa55-w0rd@db:5432/serving"
    assert url_password(url) == "pa55-w0rd" and url_password("sqlite:///x.db") is None
    text = f"cannot open {url}; token admin-token-1"
    shown = redact(text, [url_password(url), "admin-token-1", None, ""])
    assert "pa55-w0rd" not in shown and "admin-token-1" not in shown and "db:5432" in shown
    settings = ServingSettings(state_url=url, admin_token="admin-token-1")
    assert {"pa55-w0rd", "admin-token-1"} <= set(settings.secrets())
