"""The control plane: what acts on the router rather than answering requests.

`RouterCore` answers (classify, direct, explain, flags in force, health); `ControlPlane` drives the
live evaluation's rollout, the challenger, retraining, version pins and swaps, and tells operators
what it decided. The admin, status and experiments routes delegate to it, as MLServer's endpoints
delegate to its DataPlane. Built after the core by the one composition root (serving/wiring.py),
so the challenger's `promote` is this object's `swap_model` and nothing is attached later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from serving.delivery.challenger import ChallengerController
from serving.delivery.notify import Notifier
from serving.errors import ArmUnavailable, InvalidInput
from serving.errors import NotFound as NotFoundError
from serving.routing.arms import LocalArm, describe_model, info_from_description
from serving.routing.core import RouterCore

if TYPE_CHECKING:
    from serving.delivery.live import LiveEvaluation
    from serving.delivery.retraining import RetrainingJob
    from serving.store import StateStore
    from serving.store.pins import VersionPins

log = logging.getLogger(__name__)

ModelLoader = Callable[[str], Awaitable[dict[str, Any]]]


class ControlPlane:
    """Live evaluation, the challenger, retraining, pins and version swaps over one RouterCore."""

    def __init__(
        self,
        core: RouterCore,
        *,
        live: LiveEvaluation | None = None,
        trials_store: StateStore | None = None,
        retraining: RetrainingJob | None = None,
        model_loaders: Mapping[str, ModelLoader] | None = None,
        fault_setter: Callable[..., Awaitable[Any]] | None = None,
        notifier: Notifier | None = None,
        pins: VersionPins | None = None,
    ):
        self.core = core
        self.live = live
        """The live evaluation the core records into (serving/delivery/live.py), or None."""
        self.challenger: ChallengerController | None = (
            ChallengerController(trials_store, promote=self._promote, champion=self._champion)
            if trials_store is not None
            else None
        )
        """The challenger's controller over the shared trial record, None without a store."""
        self.retraining = retraining
        self.model_loaders = dict(model_loaders or {})
        self.fault_setter = fault_setter
        self.notifier = notifier or Notifier(None)
        """Announces rollout decisions to operators (serving/delivery/notify.py); off by default."""
        self.pins = pins
        """VersionPins shared by every replica (serving/store/pins.py), or None."""

    def _promote(self, version: str) -> Awaitable[dict[str, Any]]:
        return self.swap_model("ensemble", version)

    def _champion(self) -> str | None:
        info = self.core.ensemble.info
        return info.version if info is not None else None

    # ------------------------------------------------------------------ rollout
    def rollout_tick(self, force: bool = False) -> dict[str, Any] | None:
        """Evaluate the rollout (when automatic) and apply the controller's stage to the flags."""
        if self.live is None:
            return None
        decision = self.live.tick(force=force)
        self.sync_rollout()
        return decision

    async def follow_rollout(self, leading: bool) -> None:
        """One round of the background rollout loop (its only driver): the lease holder evaluates
        and announces what it decides; the others read the shared stage. Either way the flags in
        force follow it. Store I/O runs in a thread, the flags are swapped on the event loop."""
        if self.live is None:
            return
        if leading:
            decision = await asyncio.to_thread(self.live.tick)
            if decision is not None and decision.get("logged"):  # holds: when reasons change
                self.notifier.announce(decision)
        else:
            await asyncio.to_thread(self.live.controller.refresh)
        self.sync_rollout()

    def sync_rollout(self) -> None:
        """Make the flags in force follow the controller's stage (another replica may have moved
        it)."""
        core = self.core
        governed = self.live.governed_flags(core.flags) if self.live is not None else None
        if governed is not None:
            core.apply_flags(governed, "rollout")

    # ------------------------------------------------------------------ versions
    def served_versions(self) -> dict[str, str]:
        """The version each model's service serves now (what a follow-the-pin variant means)."""
        arms = (("classic", self.core.classic_direct), ("ensemble", self.core.ensemble))
        return {name: arm.info.version for name, arm in arms if arm.info is not None}

    def wanted_versions(self) -> list[str]:
        """Ensemble versions this replica should load next to the champion: the trial's and the
        experiment's (each replica derives the same list from the shared flags and record)."""
        core = self.core
        champion = core.ensemble.info.version if core.ensemble.info is not None else None
        wanted = [core.challenger.version] if core.challenger is not None else []
        if core.flags.experiment is not None:
            wanted += [v.version for v in core.flags.experiment.variants if v.version]
        return [v for v in dict.fromkeys(wanted) if v != champion]

    async def swap_model(self, name: str, version: str) -> dict[str, Any]:
        """Make a service serve another stored version ("previous", "latest" or an exact version).

        The service loads the new version before swapping, so requests never wait on a load and a
        version that fails to load leaves the current one serving (the error is returned).
        """
        core = self.core
        arm = core.ensemble if name == "ensemble" else core.classic_direct
        if name not in self.model_loaders or arm.info is None:
            raise ArmUnavailable(f"the {name} service is not ready")
        tag = await self._resolve(name, version, arm.info.version)
        try:
            result = await self.model_loaders[name](tag)
        except Exception as exc:
            raise InvalidInput(f"{name} refused {tag}: {exc}") from None
        if name == "classic":
            await self._load_local_classic(tag)
        if self.pins is not None:  # every other replica's services follow the pin
            await asyncio.to_thread(self.pins.pin, name, tag)
        core.cache.clear()
        await core.refresh_health()
        return result

    @staticmethod
    async def _resolve(name: str, version: str, current_version: str) -> str:
        """The stored tag `version` means for `name`: "latest", "previous" (the one stored before
        `current_version`) or an exact version."""
        from models import store

        if version not in ("previous", "latest"):
            return f"{name}:{version}"
        stored = await asyncio.to_thread(store.versions, name)  # newest first
        current = [v["version"] for v in stored]
        if version == "latest":
            return str(stored[0]["tag"])
        if current_version not in current or current.index(current_version) + 1 >= len(current):
            raise NotFoundError(
                f"no version of {name} older than {current_version} in the model store"
            )
        return str(stored[current.index(current_version) + 1]["tag"])

    async def follow_pins(self) -> None:
        """Serve the pinned classic version in this process too (the services follow by
        themselves); the next health refresh picks up what the services now serve."""
        classic = self.core.classic
        if self.pins is None or not isinstance(classic, LocalArm):
            return
        pinned = (await asyncio.to_thread(self.pins.current)).get("classic")
        if pinned and classic.info is not None and pinned != classic.info.tag:
            try:
                await self._load_local_classic(pinned)
            except Exception as exc:
                log.error("classic: pinned version %s refused in the router: %s", pinned, exc)
            else:
                self.core.cache.clear()

    async def _load_local_classic(self, tag: str) -> None:
        classic = self.core.classic
        if not isinstance(classic, LocalArm):
            return
        from models import store

        model, stored_model = await asyncio.to_thread(store.load, tag)
        description = describe_model("classic", tag, model, stored_model.info.metadata)
        classic.model, classic.info = model, info_from_description(description)
