"""Which arm answers a request: one pure function, one precedence, every decision with its reason.

Arms: classic, ensemble, and the cascade (dynamic selection, served by the ensemble service: a
cheap first stage, the ensemble for the rows it is unsure of). The rules choose classic or "the
ensemble"; `ensemble.target` in the flags says whether the ensemble or the cascade serves what
they send to the ensemble (the cascade only when the served model has one), the users' "auto"
preference chooses the cascade when it can answer, and the header may name any arm. The fallback
rules cover both arms of the ensemble service.

More than two arms: when the flags define an `experiment`, its sticky variant split (each variant a
served model and version, serving/routing/variants.py) replaces the percentage split as the last
rule. A challenger in its A/B stage (serving/delivery/challenger.py) takes its sticky share of
whatever the rules send to the champion ensemble. A variant or challenger version that is not
loaded here is answered by the champion, and its answer says so (its model_version), so the
evaluation always credits the version that really answered.

Stickiness comes from hashing, not from stored state: a user's bucket is
`murmur3_32("{flag}:{user}") % 100 + 1` (Unleash's normalisation, seed 0), so any router replica,
or any other system, puts the same user in the same bucket, and raising the percentage only adds
users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import mmh3

from serving.config.experiments import Experiment, Variant
from serving.config.flags import EligibilityRule, EnsembleFlag, FlagConfig
from serving.routing.variants import assign, point

Arm = Literal["classic", "ensemble", "cascade"]
ARMS: tuple[Arm, ...] = ("classic", "ensemble", "cascade")
SERVICE_ARMS: tuple[Arm, ...] = ("ensemble", "cascade")
"""The arms the ensemble service answers: its health, breaker and fallback cover both."""
PREFERENCES = ("classic", "ensemble", "auto")


class Reason(StrEnum):
    """The rule that made a decision (a metrics label and the answer to "why this arm?")."""

    KILL_SWITCH = "kill_switch"
    BREAKER_OPEN = "breaker_open"
    UNHEALTHY = "unhealthy"
    HEADER = "header"
    PREFERENCE = "preference"
    ALLOW_LIST = "allow_list"
    NOT_ELIGIBLE = "not_eligible"
    SPLIT = "split"
    VARIANT = "variant"


RANDOMISED_REASONS: frozenset[str] = frozenset({Reason.SPLIT.value, Reason.VARIANT.value})
"""The rules whose arm a hash of the user chose: the only A/B evidence. A header, a preference,
an allow-list, a kill switch, a direct endpoint or a fallback chose (or forced) the arm; such
traffic is reported, never compared (selection would bias the comparison)."""


def is_randomised(reason: str, fallback: bool) -> bool:
    """Whether a request's arm was assigned at random (the split or a variant, no fallback)."""
    return reason in RANDOMISED_REASONS and not fallback


PRECEDENCE: tuple[tuple[Reason, str], ...] = (
    (Reason.KILL_SWITCH, "ensemble.enabled is false: classic for everyone, nothing else is asked"),
    (Reason.BREAKER_OPEN, "the rules below chose the ensemble but its breaker is open: classic"),
    (Reason.UNHEALTHY, "the rules below chose the ensemble but it is not ready: classic"),
    (Reason.HEADER, "X-Model-Preference header names an arm (when header_override is on)"),
    (
        Reason.PREFERENCE,
        "the user's stored preference: classic or ensemble; auto is the cascade when the ensemble "
        "is ready and has one (otherwise auto follows on)",
    ),
    (Reason.ALLOW_LIST, "the user, or a group the user belongs to, is in allowed_users: ensemble"),
    (Reason.NOT_ELIGIBLE, "an eligibility rule (attribute or time window) fails: classic"),
    (
        Reason.SPLIT,
        "bucket(flag, user or request key) <= rollout_percentage: ensemble, else classic",
    ),
    (
        Reason.VARIANT,
        "with an experiment in the flags, in place of the split: the variant of "
        "murmur3_32('{salt}:{user}') % 10000 + 1 by the variants' weights",
    ),
)
"""The order in which `decide` applies its rules, first match wins (for docs and `explain`)."""


@dataclass(frozen=True)
class RequestContext:
    """What the policy may know about one request."""

    user_id: str | None
    """Stable user id; None (or empty) for anonymous requests."""
    request_key: str
    """Stickiness key when there is no user id, e.g. a session id or a hash of the features."""
    header_preference: Arm | None = None
    """Arm named by the X-Model-Preference header."""
    user_preference: Literal["classic", "ensemble", "auto"] | None = None
    """The user's stored choice; "auto" is the cascade when it can answer, else (and None) the
    rules below decide."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Request attributes the eligibility rules look at, e.g. tier or region."""

    def __post_init__(self) -> None:
        if self.header_preference is not None and self.header_preference not in ARMS:
            raise ValueError(
                f"header preference must be one of {ARMS}, got {self.header_preference!r}"
            )
        if self.user_preference is not None and self.user_preference not in PREFERENCES:
            raise ValueError(
                f"user preference must be one of {PREFERENCES}, got {self.user_preference!r}"
            )

    @property
    def sticky_key(self) -> str:
        """The key hashed into a bucket: the user id, else the request key."""
        return self.user_id or self.request_key


@dataclass(frozen=True)
class ChallengerSplit:
    """A challenger version in its A/B stage: `weight` percent of the users the rules send to the
    champion ensemble get it instead, sticky under `salt`."""

    version: str
    weight: float
    salt: str

    def takes(self, key: str) -> bool:
        return point(self.salt, key) <= round(self.weight * 100)


@dataclass(frozen=True)
class Health:
    """The ensemble's health as the router sees it when deciding."""

    ensemble_ready: bool = True
    breaker_open: bool = False
    cascade_available: bool = False
    """The served ensemble has a cascade that can run (trained with one, its first stage loaded)."""
    versions: frozenset[str] = frozenset()
    """Ensemble versions loaded next to the champion (challengers and experiment variants)."""
    challenger: ChallengerSplit | None = None
    """The challenger in its A/B stage, if any."""


@dataclass(frozen=True)
class Decision:
    """The chosen arm and the rule that chose it."""

    arm: Arm
    reason: Reason
    fallback: bool
    """True when the ensemble was meant but classic answers instead (breaker open, not ready)."""
    bucket: int | None
    """1..100 when the percentage split was evaluated, else None."""
    meant: Arm | None = None
    """On a fallback: the arm of the ensemble service the rules chose (ensemble or cascade)."""
    version: str | None = None
    """An ensemble version other than the champion's that answers (a challenger or a variant
    pinned to a version); None: the version the service serves."""
    variant: str | None = None
    """The experiment variant (or "challenger"/"champion" in a challenger's A/B), if any."""

    @property
    def randomised(self) -> bool:
        return is_randomised(self.reason.value, self.fallback)

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "reason": self.reason.value,
            "randomised": self.randomised,
            "fallback": self.fallback,
            "bucket": self.bucket,
            "meant": self.meant,
            "version": self.version,
            "variant": self.variant,
        }


def bucket(flag: str, key: str) -> int:
    """The key's bucket, 1..100: `murmur3_32("{flag}:{key}", seed=0) % 100 + 1`."""
    return mmh3.hash(f"{flag}:{key}", signed=False) % 100 + 1


def decide(
    ctx: RequestContext, cfg: FlagConfig, health: Health, now: datetime | None = None
) -> Decision:
    """Choose the arm for one request, following PRECEDENCE.

    `now` (default: the current UTC time) is only read by time-window eligibility rules.
    """
    if not cfg.ensemble.enabled:
        return Decision("classic", Reason.KILL_SWITCH, fallback=False, bucket=None)
    intended = _intended(ctx, cfg, health, now)
    if intended.arm in SERVICE_ARMS and intended.version is None and health.breaker_open:
        return _fallback(intended, Reason.BREAKER_OPEN)
    if intended.arm in SERVICE_ARMS and intended.version is None and not health.ensemble_ready:
        return _fallback(intended, Reason.UNHEALTHY)
    return intended


def _fallback(intended: Decision, reason: Reason) -> Decision:
    return Decision(
        "classic", reason, True, intended.bucket, intended.arm, variant=intended.variant
    )


def explain(
    ctx: RequestContext, cfg: FlagConfig, health: Health, now: datetime | None = None
) -> dict[str, Any]:
    """The decision, the arm the rules intended, and every rule's outcome, in PRECEDENCE order.

    Each rule reports `applies`: whether it would decide the request if nothing above it did.
    """
    now = _aware(now)
    flag = cfg.ensemble
    checks = [_rule_holds(rule, ctx.attributes, now) for rule in flag.eligibility]
    via = _allow_list_match(ctx.user_id, flag)
    key = ctx.sticky_key
    user_bucket = bucket(cfg.flag, key)
    in_split = user_bucket <= flag.rollout_percentage
    header_used = flag.header_override and ctx.header_preference is not None
    rules = [
        _rule(Reason.KILL_SWITCH, not flag.enabled, f"ensemble.enabled is {flag.enabled}"),
        _rule(Reason.BREAKER_OPEN, health.breaker_open, f"breaker open: {health.breaker_open}"),
        _rule(
            Reason.UNHEALTHY, not health.ensemble_ready, f"ensemble ready: {health.ensemble_ready}"
        ),
        _rule(
            Reason.HEADER,
            header_used,
            f"header {ctx.header_preference!r}, header_override {flag.header_override}",
        ),
        _rule(
            Reason.PREFERENCE,
            ctx.user_preference in ("classic", "ensemble") or _auto_cascade(ctx, health),
            f"user preference {ctx.user_preference!r}"
            + (
                f" (cascade available: {health.cascade_available}, "
                f"ensemble ready: {health.ensemble_ready})"
                if ctx.user_preference == "auto"
                else ""
            ),
        ),
        _rule(
            Reason.ALLOW_LIST,
            via is not None,
            f"user {ctx.user_id!r} "
            + ("not allow-listed" if via is None else f"allow-listed via {via}"),
        ),
        {
            **_rule(
                Reason.NOT_ELIGIBLE,
                not all(checks),
                f"{checks.count(False)} of {len(checks)} rules fail",
            ),
            "checks": [
                {
                    "rule": rule.model_dump(mode="json", by_alias=True, exclude_none=True),
                    "holds": held,
                }
                for rule, held in zip(flag.eligibility, checks, strict=True)
            ],
        },
        _rule(
            Reason.SPLIT,
            cfg.experiment is None,
            f"bucket({cfg.flag!r}, {key!r}) = {user_bucket} {'<=' if in_split else '>'} "
            f"{flag.rollout_percentage}: {'ensemble' if in_split else 'classic'}",
        ),
        _rule(
            Reason.VARIANT,
            cfg.experiment is not None,
            "no experiment in the flags"
            if cfg.experiment is None
            else f"experiment {cfg.experiment.name!r}: point "
            f"{point(cfg.experiment.hash_salt, key)} of 10000 -> variant "
            f"{assign(cfg.experiment, key).name!r}",
        ),
    ]
    return {
        "decision": decide(ctx, cfg, health, now).as_dict(),
        "intended": _intended(ctx, cfg, health, now).as_dict(),
        "target": {"configured": flag.target, "cascade_available": health.cascade_available},
        "challenger": None
        if health.challenger is None
        else {
            "version": health.challenger.version,
            "weight": health.challenger.weight,
            "takes_this_user": health.challenger.takes(key),
        },
        "evaluated_at": now.isoformat(),
        "rules": rules,
    }


def _intended(
    ctx: RequestContext, cfg: FlagConfig, health: Health, now: datetime | None
) -> Decision:
    """The arm the rules below the health checks choose, with a challenger's A/B share."""
    decision = _rules(ctx, cfg, health, now)
    split = health.challenger
    if (
        split is not None
        and decision.arm == "ensemble"
        and decision.version is None
        and decision.reason is not Reason.HEADER
        and split.version in health.versions
    ):
        taken = split.takes(ctx.sticky_key)
        return replace(
            decision,
            version=split.version if taken else None,
            variant="challenger" if taken else "champion",
        )
    return decision


def _rules(ctx: RequestContext, cfg: FlagConfig, health: Health, now: datetime | None) -> Decision:
    """The arm the rules below the health checks choose, first match wins."""
    flag = cfg.ensemble
    if flag.header_override and ctx.header_preference is not None:
        arm: Arm = ctx.header_preference
        if arm == "cascade" and not health.cascade_available:
            arm = "ensemble"  # a model without a cascade: the header gets the whole ensemble
        return Decision(arm, Reason.HEADER, fallback=False, bucket=None)
    if ctx.user_preference in ("classic", "ensemble"):
        arm = _target(cfg, health) if ctx.user_preference == "ensemble" else "classic"
        return Decision(arm, Reason.PREFERENCE, fallback=False, bucket=None)
    if _auto_cascade(ctx, health):
        return Decision("cascade", Reason.PREFERENCE, fallback=False, bucket=None)
    if _allow_list_match(ctx.user_id, flag) is not None:
        return Decision(_target(cfg, health), Reason.ALLOW_LIST, fallback=False, bucket=None)
    if flag.eligibility:
        moment = _aware(now)
        if not all(_rule_holds(rule, ctx.attributes, moment) for rule in flag.eligibility):
            return Decision("classic", Reason.NOT_ELIGIBLE, fallback=False, bucket=None)
    if cfg.experiment is not None:
        return _variant_decision(cfg.experiment, ctx.sticky_key, health)
    user_bucket = bucket(cfg.flag, ctx.sticky_key)
    arm = _target(cfg, health) if user_bucket <= flag.rollout_percentage else "classic"
    return Decision(arm, Reason.SPLIT, fallback=False, bucket=user_bucket)


def _variant_decision(experiment: Experiment, key: str, health: Health) -> Decision:
    """The experiment's variant for `key`; a version not loaded here is answered by the champion
    (the answer's version says so, and the evaluation credits the champion)."""
    variant: Variant = assign(experiment, key)
    arm: Arm = variant.model
    if arm == "cascade" and not health.cascade_available:
        arm = "ensemble"
    version = variant.version if variant.version in health.versions else None
    return Decision(
        arm, Reason.VARIANT, fallback=False, bucket=None, version=version, variant=variant.name
    )


def _target(cfg: FlagConfig, health: Health) -> Arm:
    """What serves a request the rules send to the ensemble (`ensemble.target` in the flags)."""
    if cfg.ensemble.target == "cascade" and health.cascade_available:
        return "cascade"
    return "ensemble"


def _auto_cascade(ctx: RequestContext, health: Health) -> bool:
    """The "auto" preference takes the cascade when it can answer; otherwise the rules below."""
    return ctx.user_preference == "auto" and health.cascade_available and health.ensemble_ready


def _allow_list_match(user_id: str | None, flag: EnsembleFlag) -> str | None:
    """How the user is allow-listed ("user id" or "group <name>"), or None."""
    if not user_id:
        return None
    for name in flag.allowed_users:
        if name == user_id:
            return "user id"
        if user_id in flag.groups.get(name, ()):
            return f"group {name}"
    return None


def _rule_holds(rule: EligibilityRule, attributes: Mapping[str, str], now: datetime) -> bool:
    if rule.time_window is not None:
        return rule.time_window.contains(now)
    if rule.attribute is None or rule.in_ is None:  # the model's validator rules this out
        return False
    return attributes.get(rule.attribute) in rule.in_


def _aware(now: datetime | None) -> datetime:
    """`now`, defaulting to the current time; a naive datetime is taken as UTC."""
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _rule(reason: Reason, applies: bool, detail: str) -> dict[str, Any]:
    return {"rule": reason.value, "applies": applies, "detail": detail}
