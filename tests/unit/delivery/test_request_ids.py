"""Signed request ids: round trip, forgery, tampering, expiry, and the length the API accepts."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from serving.delivery.request_ids import MAX_LENGTH, RequestIds
from serving.tokens import b64decode, b64encode
from tests.doubles import FakeClock

SECRET = "s" * 32
PROBS = np.array([0.1, 0.2, 0.7])


def ids(clock=None, secret=SECRET, ttl_s=60.0) -> RequestIds:
    return RequestIds(secret, ttl_s, clock=clock or FakeClock(1_800_000_000.0))


@given(
    arm=st.sampled_from(["classic", "ensemble", "cascade", "variant-b"]),
    version=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=32),
    index=st.integers(0, 65535),
)
def test_an_issued_id_verifies_and_says_what_was_served(arm, version, index):
    clock = FakeClock(1_800_000_000.0)
    request_ids = ids(clock)
    rid = request_ids.issue(arm, version, index, PROBS)
    clock.advance(30.0)
    claim = request_ids.verify(rid)
    assert claim is not None and len(rid) <= MAX_LENGTH
    assert (claim.arm, claim.model_version, claim.class_index) == (arm, version, index)
    assert claim.created_at == 1_800_000_000.0


def test_ids_are_unique_even_for_identical_answers():
    request_ids = ids()
    assert len({request_ids.issue("classic", "v1", 0, PROBS) for _ in range(1000)}) == 1000


@given(position=st.integers(0, 200), flip=st.integers(1, 255))
def test_any_altered_byte_fails(position, flip):
    request_ids = ids()
    raw = bytearray(b64decode(request_ids.issue("ensemble", "v1", 2, PROBS)))
    raw[position % len(raw)] ^= flip
    assert request_ids.verify(b64encode(bytes(raw))) is None


def test_another_secret_expiry_and_garbage_fail():
    clock = FakeClock(1_800_000_000.0)
    rid = ids(clock).issue("ensemble", "v1", 2, PROBS)
    assert ids(clock, secret="t" * 32).verify(rid) is None
    clock.advance(61.0)
    assert ids(clock).verify(rid) is None
    for garbage in ("", "nope", "x" * 500, "=====", "0" * 40, "é"):
        assert ids(clock).verify(garbage) is None


def test_the_id_carries_whether_the_arm_was_randomised_and_defaults_to_not():
    request_ids = ids()
    assert request_ids.verify(request_ids.issue("ensemble", "v1", 1, PROBS, True)).randomised
    assert not request_ids.verify(request_ids.issue("ensemble", "v1", 1, PROBS)).randomised
    assert not request_ids.verify(request_ids.issue("classic", "v1", 1, PROBS, False)).randomised


def test_flipping_the_randomised_bit_breaks_the_tag():
    request_ids = ids()
    raw = bytearray(b64decode(request_ids.issue("ensemble", "v1", 1, PROBS, False)))
    raw[0] |= 0x80
    assert request_ids.verify(b64encode(bytes(raw))) is None
