"""Label Studio in `casepilot up` / `down`: the review queue's UI started like the other UIs.

`start` is called by `flows.platform.up.bring_up` right after the other slow starters are launched:
the first time it runs Label Studio's account setup (`review_server.initialise`: one Django boot
per reviewer, while Prefect, MLflow and the Evidently UI boot in their own processes), then
launches `label-studio start` on 127.0.0.1:`review.port` as a program of the home's
supervisord (flows/platform/supervisor.py), so `casepilot down` stops it. `bring_up` then
waits on `health_check` for at most `review.startup_timeout_s`. Without the tool environment
(`make label-studio`) or with `review.start_with_up: false` it is skipped with a status line
naming the fix; `up` carries on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from flows.platform import review_server, stack

if TYPE_CHECKING:
    from flows.platform.up_stack import Stack
    from pipelines.config import Params

NAME = "label-studio"
USERS = "label-studio users"  # the status note: who can sign in, where the passwords live


def start(st: Stack) -> stack.Service | None:
    """The running or newly launched Label Studio, or None when skipped (status says why)."""
    params = st.params
    if not params.review.start_with_up:
        st.status[NAME] = (
            "skipped: review.start_with_up is false; the review flows need a Label Studio at "
            f"{review_server.url(params)}"
        )
        return None
    if found := st.running(NAME):
        st.status[USERS] = users_note(params)
        return found
    try:
        review_server.studio_bin()
    except FileNotFoundError as err:
        st.status[NAME] = f"skipped: {err}"
        return None
    port = params.review.port
    if not stack.port_free(port):  # before the account setup, which takes a while
        raise RuntimeError(
            f"port {port} on {stack.HOST} is taken by another program; stop it or set "
            "review.port in params.yaml"
        )
    review_server.initialise(params, params.review.startup_timeout_s)
    command, env = review_server.start_command(params)
    own = {k: v for k, v in env.items() if os.environ.get(k) != v}  # its settings + account
    service = st.start(NAME, command, review_server.url(params), port, **own)
    st.status[USERS] = users_note(params)
    return service


def health_check(service: stack.Service) -> Callable[[], bool]:
    """What `bring_up` polls until Label Studio answers (its /health page)."""
    return lambda: review_server.healthy(service.url)


def users_note(params: Params) -> str:
    """Who signs in to Label Studio and where their passwords and API tokens are."""
    names = ", ".join(("admin", *params.review.reviewers))
    where = review_server.secrets_file(params.home)
    return f"{names} (@{review_server.EMAIL_DOMAIN}); passwords and API tokens in {where} (0600)"
