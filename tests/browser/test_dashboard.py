"""The rollout status page in a real headless Chromium, after some labelled traffic.

The experiment, version-on-trial and retraining sections are checked twice: as the real server
reports them (null without an experiment, a trial or retraining runs), and with sample sections
built by the real report functions, merged into the page's own /api/status answers by a fetch
wrapper injected before the page's script runs (no retraining run needed).
"""

from __future__ import annotations

import base64
import json
import random
import time
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from serving.config.experiments import ChallengerConfig, Experiment, Variant
from serving.delivery.challenger import ab_experiment
from serving.evidence import experiment_report
from tests.integration.test_api import varied_rows
from tests.support import ADMIN_TOKEN, ROOT

pytestmark = pytest.mark.integration
SCREENSHOT = ROOT / "results" / "screenshots" / "dashboard.png"
SAMPLE_SCREENSHOT = ROOT / "results" / "screenshots" / "dashboard-trial-sample.png"
SECTIONS = {
    "trial": "Version on trial",
    "experiment": "Experiment variants",
    "retraining": "Retraining runs",
}


def open_dashboard(server, browser) -> None:
    """Load the page with the operator's token on every request (its own fetches included)."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}
    )
    browser.get(f"{server.url}/dashboard")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
    )


def severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def table(browser, css: str) -> list[list[str]]:
    """The cells of each row (the sentences under rows apart: `notes`)."""
    return [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, f"{css} tbody tr:not(.note)")
    ]


def notes(browser, css: str) -> list[str]:
    return [tr.text for tr in browser.find_elements(By.CSS_SELECTOR, f"{css} tbody tr.note")]


def with_status_sections(browser, sections: dict[str, Any]) -> str:
    """Merge `sections` into every /api/status answer the next loaded page fetches; returns the
    script's identifier (remove it with Page.removeScriptToEvaluateOnNewDocument)."""
    source = (
        "(() => { const extra = " + json.dumps(sections) + "; const real = window.fetch;"
        " window.fetch = async (...args) => { const answer = await real(...args);"
        " if (!String(args[0]).includes('/api/status')) return answer;"
        " const body = await answer.json();"
        " return new Response(JSON.stringify({...body, ...extra}),"
        " {status: answer.status, headers: {'content-type': 'application/json'}}); }; })();"
    )
    return browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})[
        "identifier"
    ]


def feedback_rows(arm: str, version: str, n: int, accuracy: float, rng: random.Random) -> list:
    rows = []
    for _ in range(n):
        label = rng.choice(["a", "b"])
        right = rng.random() < accuracy
        rows.append(
            {
                "arm": arm,
                "model_version": version,
                "label": label,
                "predicted": label if right else ("b" if label == "a" else "a"),
                "latency_ms": rng.uniform(2, 9),
            }
        )
    return rows


def sample_sections() -> dict[str, Any]:
    """A trial in A/B, a three-variant experiment and three retraining runs, shaped by the real
    report functions (serving/evidence/experiment_report.py, challenger.py)."""
    rng = random.Random(18)
    cfg = ChallengerConfig(shadow_min_samples=50, min_labelled=50, margin=0.02)
    now = time.time()
    champion, child = "v20250101", "v20250301"
    served = {"ensemble": champion}
    ab = experiment_report.experiment_report(
        feedback_rows("ensemble", champion, 300, 0.80, rng)
        + feedback_rows("ensemble", child, 300, 0.86, rng),
        ab_experiment(child, cfg),
        served,
        cfg,
    )
    shadow = experiment_report.agreement_verdict(200, 180, cfg)
    metrics = {
        "holdout": {"parent": 0.781, "child": 0.842},
        "original_test": {"parent": 0.874, "child": 0.869},
    }
    challenger = {
        "version": child,
        "champion": champion,
        "stage": "ab",
        "trigger": "retraining",
        "entered_at": now - 7200,
        "stage_at": now - 3600,
        "ab_started_at": now - 3600,
        "lineage": {
            "parent": f"ensemble:{champion}",
            "data_window": {"since": now - 86400, "until": now - 7300},
            "rows": {"original": 5000, "feedback_train": 700, "feedback_holdout": 300},
            "metrics": metrics,
        },
        "history": [
            {"stage": "shadow", "at": now - 7200, "reason": "entered (retraining)"},
            {"stage": "ab", "at": now - 3600, "reason": "shadow: " + shadow["reason"]},
        ],
        "shadow": shadow,
        "ab": ab,
        "loaded_here": {"loaded": [child], "failed": {}},
    }
    experiment = Experiment(
        name="three-arms",
        variants=[
            Variant(name="control", model="classic", weight=40, control=True),
            Variant(name="ensemble", model="ensemble", weight=30),
            Variant(name="retrained", model="ensemble", version=child, weight=30),
        ],
    )
    report = experiment_report.experiment_report(
        feedback_rows("classic", "c1", 250, 0.75, rng)
        + feedback_rows("ensemble", champion, 250, 0.62, rng)
        + feedback_rows("ensemble", child, 250, 0.84, rng),
        experiment,
        {**served, "classic": "c1"},
        cfg,
    )
    runs = [
        {
            "id": "r3",
            "trigger": "schedule",
            "started_at": now - 600,
            "finished_at": now - 480,
            "duration_s": 120.5,
            "outcome": "accepted",
            "tag": f"ensemble:{child}",
            "parent": f"ensemble:{champion}",
            "reasons": [],
            "metrics": metrics,
        },
        {
            "id": "r2",
            "trigger": "admin",
            "started_at": now - 9000,
            "finished_at": now - 8900,
            "duration_s": 100.0,
            "outcome": "refused",
            "tag": None,
            "parent": f"ensemble:{champion}",
            "reasons": ["holdout accuracy 0.51 < parent 0.78 - tolerance 0.02 <script>"],
            "metrics": None,
        },
        {"id": "r1", "trigger": "schedule", "outcome": "failed", "reasons": ["timeout"]},
    ]
    retraining = {
        "runs": runs,
        "schedule": {
            "enabled": True,
            "window": {"days": ["sat", "sun"], "from": "02:00", "to": "05:00", "timezone": "UTC"},
            "due": False,
            "reason": "outside the window",
        },
    }
    return {
        "challenger": challenger,
        "experiment": {**report, "window_s": 3600, "loaded": {}},
        "retraining": retraining,
    }


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
    open_dashboard(server, browser)
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
    # the experiment, trial and retraining sections as the server reports them (null here
    # unless another test of the session put a version on trial or ran a retraining)
    for section, heading in SECTIONS.items():
        assert browser.find_element(By.CSS_SELECTOR, f"#{section} h2").text == heading
    status = httpx.get(
        f"{server.url}/api/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    if status.get("challenger") is None:
        assert "no version on trial" in browser.find_element(By.ID, "trial-note").text
        assert browser.find_element(By.ID, "trial-stage").text == "–"
    if status.get("experiment") is None:
        assert "no experiment" in browser.find_element(By.ID, "experiment-note").text
        assert table(browser, "#variants") == []
    if status.get("retraining") is None:
        assert "no retraining" in browser.find_element(By.ID, "retraining-schedule").text
    else:
        assert "schedule" in browser.find_element(By.ID, "retraining-schedule").text
    errors = severe(browser)
    assert errors == [], errors
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_trial_experiment_and_retraining_sections_with_sample_data(server, browser):
    sample = sample_sections()
    script = with_status_sections(browser, sample)
    try:
        open_dashboard(server, browser)
        WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.ID, "trial-version").text != "–"
        )
        find = browser.find_element
        assert find(By.ID, "trial-version").text == "v20250301"
        assert find(By.ID, "trial-stage").text == "A/B"
        assert find(By.ID, "trial-stage").get_attribute("class") == "warn"
        assert find(By.ID, "trial-champion").text == "v20250101"
        assert find(By.ID, "trial-shadow").text == "0.900 pass"
        assert "180/200 agreed [" in find(By.ID, "trial-shadow-note").text
        ab = sample["challenger"]["ab"]["challengers"]["challenger"]
        [row] = table(browser, "#trial-ab")
        assert row[0] == "challenger" and row[1] == "300"
        assert row[4].startswith(f"{ab['diff']:+.4f} [")
        assert row[7] == ab["verdict"].replace("_", "-")
        assert notes(browser, "#trial-ab") == [ab["reason"]]
        lineage = table(browser, "#trial-lineage")
        assert lineage == [
            ["recent labelled holdout", "0.7810", "0.8420", "+0.0610"],
            ["original test split", "0.8740", "0.8690", "-0.0050"],
        ]
        assert "parent ensemble:v20250101" in find(By.ID, "trial-lineage-note").text
        assert [r[1] for r in table(browser, "#trial-history")] == ["A/B", "shadow"]  # newest first

        experiment = sample["experiment"]
        variants = {r[0]: r for r in table(browser, "#variants")}
        assert set(variants) == {"control", "ensemble", "retrained"}
        assert variants["control"][9] == "control"
        assert variants["retrained"][2] == "v20250301"
        assert variants["ensemble"][2] == "v20250101 (follows pin)"
        assert variants["retrained"][3] == "30 %"
        for name in ("ensemble", "retrained"):
            verdict = experiment["challengers"][name]["verdict"]
            assert variants[name][9] == verdict.replace("_", "-")
            assert variants[name][7].startswith(f"{experiment['challengers'][name]['diff']:+.4f}")
        reasons = [experiment["challengers"][n]["reason"] for n in ("ensemble", "retrained")]
        assert notes(browser, "#variants") == reasons  # under each challenger, none for the control
        assert "experiment three-arms, control control" in find(By.ID, "experiment-note").text

        runs = table(browser, "#runs")
        assert [r[2] for r in runs] == ["accepted", "refused", "failed"]
        assert runs[0][3] == "2.0 min" and runs[0][4] == "ensemble:v20250301"
        assert runs[0][6] == "0.7810 → 0.8420"
        assert notes(browser, "#runs") == [  # reasons under their run: text, never markup
            "holdout accuracy 0.51 < parent 0.78 - tolerance 0.02 <script>",
            "timeout",
        ]
        assert runs[2][3] == "–" and runs[2][0] == "–"
        schedule = find(By.ID, "retraining-schedule").text
        assert "schedule enabled, sat,sun 02:00–05:00 UTC" in schedule and "not due" in schedule
        errors = severe(browser)
        assert errors == [], errors
        shot = browser.execute_cdp_cmd(  # the whole page, not only the window
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        SAMPLE_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SAMPLE_SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        assert SAMPLE_SCREENSHOT.stat().st_size > 10_000
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})


@pytest.mark.parametrize(
    "sections",
    [
        {"challenger": None, "experiment": None, "retraining": None},
        {  # every key optional: partial and empty shapes must not break the page
            "challenger": {
                "stage": "rolled_back",
                "history": [{}, None],
                "lineage": None,
                "ab": {},
            },
            "experiment": {"variants": {"x": None}, "challengers": None},
            "retraining": {"runs": [{}, None], "schedule": None},
        },
    ],
    ids=["null", "partial"],
)
def test_sections_survive_null_and_partial_status(server, browser, sections):
    script = with_status_sections(browser, sections)
    try:
        open_dashboard(server, browser)
        time.sleep(0.5)  # one more refresh on the same data
        errors = severe(browser)
        assert errors == [], errors
        if sections["challenger"] is None:
            assert "no version on trial" in browser.find_element(By.ID, "trial-note").text
            assert "no experiment" in browser.find_element(By.ID, "experiment-note").text
            assert "no retraining" in browser.find_element(By.ID, "retraining-schedule").text
        else:
            assert browser.find_element(By.ID, "trial-stage").text == "rolled back"
            assert len(table(browser, "#runs")) == 2
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})
