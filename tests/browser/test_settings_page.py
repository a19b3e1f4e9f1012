"""The opt-in settings page in a real headless Chromium against a real `bentoml serve`.

Selenium drives the Debian chromium + chromium-driver packages through an explicit
Service("/usr/bin/chromedriver"), so Selenium Manager never downloads a driver or a browser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BASELINE_FLAGS
from tests.support import ADMIN_TOKEN, ROOT, Server

pytestmark = pytest.mark.integration

SECRET = "browser-test-user-token-secret"
SCREENSHOT = ROOT / "results" / "screenshots" / "settings-page.png"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def pref_server(trained_store) -> Iterator[Server]:
    """The full graph with user tokens enabled; rollout 0%, so alice is on classic unless she opts
    in.
    """
    srv = Server({"SERVING_USER_TOKEN_SECRET": SECRET}, flags=BASELINE_FLAGS).start()
    try:
        assert srv.wait_until(
            lambda: (
                httpx.get(f"{srv.url}/api/models", timeout=10).json()["ensemble"].get("routable")
            ),
            timeout=60,
        ), "the ensemble never became routable:\n" + srv.log()[-3000:]
        yield srv
    finally:
        srv.stop()


def classify(server: Server, row: dict, user_id: str) -> dict:
    response = httpx.post(
        f"{server.url}/api/classify", json={"features": row, "user_id": user_id}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def mint(server: Server, user_id: str) -> dict:
    response = httpx.post(
        f"{server.url}/api/admin/users/{user_id}/token", headers=ADMIN, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_opting_in_on_the_settings_page_routes_the_user_to_the_ensemble(
    pref_server, browser, example_row
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = classify(pref_server, example_row, "alice")
    assert (before["model"], before["reason"]) == ("classic", "split")

    link = mint(pref_server, "alice")["settings_url"]
    wait = WebDriverWait(browser, 15)
    browser.get(pref_server.url + link)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "auto")
    assert "token=" not in browser.current_url  # taken out of the address bar once read
    page = browser.find_element(By.TAG_NAME, "body").text
    for text in (
        "Ensemble ML (beta)",
        "Classic",
        "Automatic (follow the rollout)",
        "slightly longer response times",
    ):
        assert text in page
    assert browser.find_element(By.ID, "model-auto").is_selected()

    browser.find_element(By.CSS_SELECTOR, "label:has(#model-ensemble)").click()
    browser.find_element(By.ID, "save").click()
    wait.until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-saved") == "ensemble"
    )
    status = browser.find_element(By.ID, "status")
    assert status.text == "Saved: Ensemble ML (beta)." and "ok" in status.get_attribute("class")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 0

    browser.refresh()
    wait.until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "ensemble"
    )
    assert browser.find_element(By.ID, "model-ensemble").is_selected()
    assert not browser.find_element(By.ID, "model-classic").is_selected()
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # e.g. a Content-Security-Policy violation

    after = classify(pref_server, example_row, "alice")
    assert (after["model"], after["reason"], after["fallback"]) == ("ensemble", "preference", False)
    assert classify(pref_server, example_row, "bob")["model"] == "classic"  # nobody else moved


def test_the_preference_api_is_per_user(pref_server):
    url = f"{pref_server.url}/api/users/carol/preference"
    assert httpx.put(url, json={"model": "ensemble"}, timeout=10).status_code == 401
    other = {"Authorization": f"Bearer {mint(pref_server, 'dave')['token']}"}
    assert httpx.put(url, json={"model": "ensemble"}, headers=other, timeout=10).status_code == 403
    own = {"X-User-Token": mint(pref_server, "carol")["token"]}
    assert httpx.get(url, headers=own, timeout=10).json() == {"user_id": "carol", "model": "auto"}
    bad = httpx.put(url, json={"model": "fastest"}, headers=own, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"


def test_the_kill_switch_beats_the_preference(pref_server, example_row):
    token = mint(pref_server, "erin")["token"]
    response = httpx.put(
        f"{pref_server.url}/api/users/erin/preference",
        json={"model": "ensemble"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert classify(pref_server, example_row, "erin")["reason"] == "preference"

    killed = copy.deepcopy(BASELINE_FLAGS)
    killed["ensemble"]["enabled"] = False
    flags_url = f"{pref_server.url}/api/admin/flags"
    assert httpx.put(flags_url, json=killed, headers=ADMIN, timeout=10).status_code == 200
    try:
        answer = classify(pref_server, example_row, "erin")
        assert (answer["model"], answer["reason"], answer["fallback"]) == (
            "classic",
            "kill_switch",
            False,
        )
    finally:
        assert (
            httpx.put(flags_url, json=BASELINE_FLAGS, headers=ADMIN, timeout=10).status_code == 200
        )
    assert classify(pref_server, example_row, "erin")["model"] == "ensemble"
