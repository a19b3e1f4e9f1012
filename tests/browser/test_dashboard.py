"""The rollout status page in a real headless Chromium, after some labelled traffic."""

from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.test_api import varied_rows
from tests.support import ADMIN_TOKEN, ROOT

pytestmark = pytest.mark.integration
SCREENSHOT = ROOT / "results" / "screenshots" / "dashboard.png"


def test_status_page_shows_stage_split_arms_and_decisions(server, browser, example_row):
    for i, row in enumerate(varied_rows(example_row, 12, seed=401)):
        answer = httpx.post(
            f"{server.url}/api/classify", json={"features": row, "user_id": f"dash-{i}"}
        ).json()
        httpx.post(
            f"{server.url}/api/feedback",
            json={"request_id": answer["request_id"], "label": answer["label"]},
        )
    assert httpx.get(f"{server.url}/dashboard").status_code == 401  # operators only
    # the operator's token on every request of the page (the page's own fetches included)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}
    )
    browser.get(f"{server.url}/dashboard")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
    )
    assert (
        browser.find_element(By.ID, "split").text.endswith("%")
        or "kill switch" in browser.find_element(By.ID, "split").text
    )
    arms = {
        row.find_elements(By.TAG_NAME, "td")[0].text
        for row in browser.find_elements(By.CSS_SELECTOR, "#arms tbody tr")
    }
    assert {"classic", "ensemble", "shadow"} <= arms
    assert browser.find_element(By.ID, "health").text.startswith(("ready", "not ready"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
