"""Signed, self-describing request ids: feedback joins on any replica, no write on the hot path.

A request id carries what the feedback join needs — the arm, the model version, the predicted
class, a digest of the probabilities and the time — under an HMAC-SHA256 tag. Any replica holding
the same secret verifies it and joins the label without a database read or the replica that
served it; a forged, altered or expired id fails verification (404 at the API) and never joins.
Idempotency across replicas comes from the feedback table's primary key on the id.

Why not a prediction log written on every request: that is a database write per request on the
hot path (or a write-behind buffer a feedback call can overtake, and a restart can lose); this
costs one HMAC (~2 µs) and nothing when the database is down.

Layout (then url-safe base64, no padding; 80-90 characters):
    version (1; its high bit: the arm was assigned at random, `policy.is_randomised`)
    | created_at, ms since epoch (6) | nonce (6) | class index (2)
    | probabilities digest (4) | arm (1 + n) | model version (1 + n) | tag (12)
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving import tokens

FORMAT_VERSION = 1
RANDOMISED_BIT = 0x80
"""Set in the version byte when the split chose the arm: only such feedback is A/B evidence
(ids issued before the bit existed read as not randomised: fail closed)."""
TAG_BYTES = 12
"""96-bit tag: forging one blindly takes ~2^95 online tries, each a rate-limited HTTP call."""
MAX_LENGTH = 128
"""Longest id a client may send back (the schema's limit)."""
_HEAD = struct.Struct(">B6s6sH4s")


@dataclass(frozen=True, slots=True)
class Claim:
    """What a verified request id says about the prediction it names."""

    arm: str
    model_version: str
    class_index: int
    created_at: float
    digest: bytes
    randomised: bool = False


class RequestIds:
    """Issues and verifies request ids under one secret (shared by every replica)."""

    def __init__(
        self,
        secret: tokens.Secret,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ):
        self._key = tokens.secret_bytes(secret, "request id secret")
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._random = random_bytes

    def issue(
        self,
        arm: str,
        model_version: str,
        class_index: int,
        probabilities: np.ndarray,
        randomised: bool = False,
    ) -> str:
        millis = int(self._clock() * 1000)
        digest = hashlib.blake2b(probabilities.tobytes(), digest_size=4).digest()
        head = FORMAT_VERSION | (RANDOMISED_BIT if randomised else 0)
        body = _HEAD.pack(head, millis.to_bytes(6, "big"), self._random(6), class_index, digest)
        body += _short(arm) + _short(model_version)
        return tokens.b64encode(body + tokens.mac(self._key, body, TAG_BYTES))

    def verify(self, request_id: str) -> Claim | None:
        """The claim of a genuine id issued within `ttl_s`; None when forged, altered, malformed
        or expired (the caller answers all of these alike: unknown id)."""
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_LENGTH:
            return None
        try:
            raw = tokens.b64decode(request_id)
        except ValueError:
            return None
        if len(raw) < _HEAD.size + 2 + TAG_BYTES:
            return None
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not tokens.same(tag, tokens.mac(self._key, body, TAG_BYTES)):
            return None
        head, millis, _nonce, class_index, digest = _HEAD.unpack_from(body)
        if head & ~RANDOMISED_BIT != FORMAT_VERSION:
            return None
        try:
            arm, rest = _read_short(body[_HEAD.size :])
            model_version, rest = _read_short(rest)
        except ValueError:
            return None
        created_at = int.from_bytes(millis, "big") / 1000.0
        age = self._clock() - created_at
        if rest or age > self.ttl_s or age < -60.0:  # a little clock skew between replicas
            return None
        randomised = bool(head & RANDOMISED_BIT)
        return Claim(arm, model_version, class_index, created_at, digest, randomised)


def _short(text: str) -> bytes:
    data = text.encode()[:255]
    return bytes([len(data)]) + data


def _read_short(data: bytes) -> tuple[str, bytes]:
    if not data or len(data) < 1 + data[0]:
        raise ValueError("truncated")
    n = data[0]
    return data[1 : 1 + n].decode(), data[1 + n :]
