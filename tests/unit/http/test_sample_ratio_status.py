"""The status page's sample-ratio block: read from the shared decision log and the experiment."""

from __future__ import annotations

from serving.evidence import srm
from serving.http.status import sample_ratio_status

BROKEN = srm.check({"classic": 625, "ensemble": 375}, {"classic": 75, "ensemble": 25})
HONEST = srm.check({"classic": 748, "ensemble": 252}, {"classic": 75, "ensemble": 25})


def test_the_newest_logged_rollout_check_is_shown_and_a_mismatch_flags_the_page():
    decisions = [
        {"action": "hold", "evidence": {"sample_ratio": BROKEN}},
        {"action": "promote", "evidence": {"sample_ratio": HONEST}},
    ]
    status = sample_ratio_status(decisions, None)
    assert BROKEN["mismatch"] and not HONEST["mismatch"]
    assert status["rollout"] is BROKEN and status["experiment"] is None
    assert status["mismatch"] is True


def test_an_experiments_mismatch_counts_and_decisions_without_the_check_are_skipped():
    decisions = [{"action": "rollback", "evidence": None}, {"action": "hold", "evidence": {}}]
    assert sample_ratio_status(decisions, None) == {
        "rollout": None,
        "experiment": None,
        "mismatch": False,
    }
    status = sample_ratio_status(decisions, {"sample_ratio": BROKEN})
    assert status["experiment"] is BROKEN and status["mismatch"] is True
    assert sample_ratio_status([], {"sample_ratio": HONEST})["mismatch"] is False
