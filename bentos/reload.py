"""Which stage versions the service runs, and swapping them safely when aliases move.

`Reloader.check` resolves the aliases through a `ModelSource` (bentos/sources.py), builds the
whole new `ModelSet` first and then swaps one reference, so a request in flight finishes on the
cascade it started with and none is dropped.

The champion and the challenger load separately: a challenger that fails to resolve or load is
reported (`Reloader.shadow_error`, a log line, the `on_reload("challenger_failed")` count) and
the champion serves without a shadow. A champion that fails keeps the previous models serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bentos.sources import CHALLENGER, CHAMPION, ModelSource, Refs, StageRef
from pipelines.cascade import Cascade
from pipelines.data.contract import STAGES

log = logging.getLogger(__name__)


def shadow_refs(
    champion: Refs, challenger: Refs, shadow: Mapping[str, bool]
) -> dict[str, StageRef]:
    """The shadow cascade's stages: the challenger's where shadow is on, else the champion's."""
    return {s: challenger[s] if shadow.get(s, True) else champion[s] for s in champion}


class StageLoadError(RuntimeError):
    """A stage folder failed to load; the message names the stage, version and folder."""


class StageCache:
    """Loaded stage objects keyed by folder, so an unchanged stage is not loaded twice."""

    def __init__(self, load_stage: Callable[[str, Path], Any]) -> None:
        self._load, self._loaded = load_stage, {}

    def cascade(self, refs: Refs) -> Cascade:
        """A cascade of the stage objects for `refs` (loading the ones not seen before)."""
        stages = {}
        for stage in STAGES:
            key = (stage, str(refs[stage].local_dir), refs[stage].version)
            if key not in self._loaded:
                try:
                    self._loaded[key] = self._load(stage, refs[stage].local_dir)
                except Exception as err:
                    raise StageLoadError(
                        f"stage {stage} {refs[stage].version} at {refs[stage].local_dir}: "
                        f"{type(err).__name__}: {err}"
                    ) from err
            stages[stage] = self._loaded[key]
        return Cascade(**stages, versions={s: refs[s].version for s in STAGES})

    def keep_only(self, *ref_sets: Refs) -> None:
        """Forget stage objects no longer referenced (in-flight requests keep theirs)."""
        used = {(r.stage, str(r.local_dir), r.version) for refs in ref_sets for r in refs.values()}
        self._loaded = {k: v for k, v in self._loaded.items() if k in used}


@dataclass(frozen=True)
class ModelSet:
    """What the service runs: the champion cascade and the shadow cascade (None = no challenger)."""

    champion: Cascade
    shadow: Cascade | None
    champion_refs: Refs
    shadow_refs: Refs
    loaded_at: float = field(default_factory=time.time)
    shadow_error: str | None = None  # why the challenger is not shadowed (failed to load)

    def signature(self) -> tuple:
        return _signature(self.champion_refs, self.shadow_refs)


def _signature(champion: Refs, shadow: Refs) -> tuple:
    return tuple(
        (s, r.version, str(r.local_dir))
        for refs in (champion, shadow)
        for s, r in sorted(refs.items())
    )


class Reloader:
    """Holds the current `ModelSet`; `check()` swaps in a new one when the aliases have moved."""

    def __init__(
        self,
        source: ModelSource,
        cache: StageCache,
        shadow: Mapping[str, bool],
        *,
        champion_alias: str = CHAMPION,
        shadow_alias: str = CHALLENGER,
        on_reload: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.source, self.cache, self.shadow = source, cache, dict(shadow)
        self.champion_alias, self.shadow_alias = champion_alias, shadow_alias
        self.current: ModelSet | None = None
        self.last_error: str | None = None
        self._on_reload = on_reload
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load_shadow(self, champion_refs: Refs) -> tuple[Cascade | None, Refs, str | None]:
        """The shadow cascade, its refs and why it failed; never raises (the champion serves)."""
        try:
            try:
                challenger = self.source.resolve(self.shadow_alias)
            except LookupError:
                challenger = dict(champion_refs)  # no challenger: nothing to shadow
            refs = shadow_refs(champion_refs, challenger, self.shadow)
            if all(refs[s].version == champion_refs[s].version for s in STAGES):
                return None, refs, None
            return self.cache.cascade(refs), refs, None
        except Exception as err:  # noqa: BLE001 - a broken challenger must not stop the champion
            error = f"challenger {self.shadow_alias!r} failed to load: {type(err).__name__}: {err}"
            log.error("%s; serving the champion without a shadow", error[:1000])
            self._on_reload("challenger_failed")
            return None, {}, error[:1000]

    def check(self, *, force: bool = False) -> bool:
        """Reload when an alias moved (or `force`); True when a new set was swapped in."""
        with self._lock:
            try:
                champion_refs = self.source.resolve(self.champion_alias)
                champion = self.cache.cascade(champion_refs)
            except Exception as err:
                self.last_error = f"{type(err).__name__}: {err}"
                log.error(  # noqa: TRY400 - one line: the reason is the message
                    "model reload failed (%s); still serving the previous models"
                    if self.current is not None
                    else "model load failed (%s); /readyz stays 503 until it succeeds",
                    self.last_error[:1000],
                )
                self._on_reload("failed")
                if self.current is None:
                    raise
                return False
            shadow, shadow_set, shadow_error = self._load_shadow(champion_refs)
            current = self.current
            if (
                not force
                and current is not None
                and current.signature() == _signature(champion_refs, shadow_set)
                and current.shadow_error == shadow_error
            ):
                return False
            new = ModelSet(champion, shadow, champion_refs, shadow_set, shadow_error=shadow_error)
            first = current is None
            self.current = new  # the swap: one reference assignment
            self.cache.keep_only(champion_refs, shadow_set)
            self.last_error = None
            self._on_reload("initial" if first else "swapped")
            log.info(
                "serving champion %s, shadow %s",
                champion.versions,
                new.shadow.versions if new.shadow else shadow_error,
            )
            return True

    @property
    def shadow_error(self) -> str | None:
        """Why the current set has no shadow although a challenger exists (None: fine)."""
        return self.current.shadow_error if self.current else None

    def start(self, poll_s: float) -> None:
        """Poll for moved aliases every `poll_s` seconds (every <= 5 s until a first load works)."""

        def poll() -> None:
            while not self._stop.wait(poll_s if self.current else min(poll_s, 5.0)):
                with contextlib.suppress(Exception):  # logged in check; keep polling
                    self.check()

        self._thread = threading.Thread(target=poll, name="alias-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
