"""Admin endpoints: disabled without a configured token, 401 without credentials, 403 when wrong."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from serving.config.settings import ServingSettings
from serving.http.app import create_app
from tests.doubles import AppClient

ADMIN_PATHS = ("/api/admin/flags", "/api/admin/shadow", "/api/admin/evaluation")


def client(token: str | None) -> AppClient:
    app = create_app(ServingSettings(admin_token=token))
    app.state.core = SimpleNamespace()
    return AppClient(app)


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_without_a_configured_token_the_admin_api_is_disabled(path):
    response = client(None).get(path, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "disabled" in response.text


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_missing_or_wrong_credentials(path):
    admin = client("the-admin-token")
    assert admin.get(path).status_code == 401
    wrong = admin.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403 and "the-admin-token" not in wrong.text
