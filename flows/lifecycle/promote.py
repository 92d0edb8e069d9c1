"""The `promote` and `rollback` flows' steps: call the registry's champion moves, report outcomes.

Only pipelines/registry/promote.py moves `champion` (and refuses without a reviewer's approval);
this module decides which stages to ask and turns a refusal into a result, not a traceback.
"""

from __future__ import annotations

import dataclasses
import getpass
from typing import TYPE_CHECKING, Any

from pipelines.data.contract import STAGES
from pipelines.registry.promote import PromotionRefused, promote_challenger, rollback_champion

if TYPE_CHECKING:
    from pipelines.config import Params

PROMOTER = "prefect-promote-flow"


def stages_with_challenger(params: Params) -> list[str]:
    """Stages whose registered model currently has a `challenger`, in cascade order."""
    from pipelines.registry.register import (
        CHALLENGER,
        aliases_of,
        registered_model_name,
        registry_client,
    )

    client = registry_client(params)
    found = []
    for stage in STAGES:
        if not client.search_registered_models(
            filter_string=f"name = '{registered_model_name(params.register, stage)}'"
        ):
            continue
        if CHALLENGER in aliases_of(client, registered_model_name(params.register, stage)):
            found.append(stage)
    return found


def promote_stages(params: Params, stage: str | None) -> dict[str, dict[str, Any]]:
    """Promote the challenger of `stage` (or of every stage that has one); outcome per stage.

    `status` is `promoted`, `refused` (asked for this `stage` but no approved promotion request
    on its challenger: the reason says what is missing), `waiting` (the same, found by a poll
    over every stage: normal, nobody approved yet) or `skipped` (no challenger).
    """
    stages = [stage] if stage else stages_with_challenger(params)
    outcomes: dict[str, dict[str, Any]] = {}
    for name in stages:
        try:
            promotion = promote_challenger(params, name, promoted_by=_promoter())
        except PromotionRefused as err:
            outcomes[name] = {"status": "refused" if stage else "waiting", "reason": str(err)}
        except LookupError as err:  # no challenger: nothing to do for this stage
            outcomes[name] = {"status": "skipped", "reason": str(err)}
        else:
            outcomes[name] = {"status": "promoted", **dataclasses.asdict(promotion)}
    return outcomes


def _promoter() -> str:
    try:
        return f"{PROMOTER}:{getpass.getuser()}"
    except (KeyError, OSError):
        return PROMOTER


def rollback_stage(params: Params, stage: str, reason: str) -> dict[str, Any]:
    """Move `champion` of `stage` back to `previous-champion` (pages on-call); what happened."""
    done = rollback_champion(params, stage, reason, by=_promoter())
    return {
        **{k: v for k, v in dataclasses.asdict(done).items() if k != "page"},
        "page": done.page.status,
    }


def service_url(params: Params) -> str | None:
    """The service to reload: `schedule.service_url`, else the one `casepilot up` runs, or None."""
    if params.schedule.service_url:
        return params.schedule.service_url.rstrip("/")
    from flows.platform import stack

    service = stack.read_state(params.home).get("bentoml")
    return service.url if service is not None and stack.is_running(service) else None


def reload_service(params: Params, timeout_s: float = 300.0) -> dict[str, Any]:
    """Ask the running service to re-resolve its aliases now (`POST /admin/reload`, API key).

    The service builds the new cascade beside the old one and swaps one reference, so no
    request fails during the switch (bentos/reload.py). Returns `{"status", ...}`: `reloaded`
    (with the champion versions now served), `unchanged`, `no service` (nothing to reload; the
    service also polls its aliases every `serve.reload_poll_s`) or `failed` with the reason.
    """
    import httpx

    from flows.platform.service_key import service_api_key

    url = service_url(params)
    if url is None:
        return {"status": "no service", "reason": "no running service recorded by `casepilot up`"}
    key = service_api_key(params)
    if key is None:
        return {"status": "failed", "url": url, "reason": (
            f"no service API key: set {params.serve.api_key_env} or start the service with "
            "`casepilot up` (it stores one under CASEPILOT_HOME/secrets)")}  # fmt: skip
    try:
        response = httpx.post(f"{url}/admin/reload", json={}, headers={"X-API-Key": key},
                              timeout=timeout_s, trust_env=False)  # fmt: skip
    except httpx.HTTPError as err:
        return {"status": "failed", "url": url, "reason": f"{url} did not answer: {err!r}"}
    if response.status_code != 200:
        return {"status": "failed", "url": url,
                "reason": f"HTTP {response.status_code}: {response.text[:200]}"}  # fmt: skip
    body = response.json()
    if body.get("last_error"):
        return {"status": "failed", "url": url, "reason": body["last_error"], **body}
    return {"status": "reloaded" if body.get("reloaded") else "unchanged", "url": url, **body}
