"""The one place that maps a stage's name to its implementation (`Stage`).

Built-in stages are found by importing `pipelines.stages.<name>` and reading its `STAGE_IMPL`;
stages defined elsewhere (a plugin, a test) are added with `add_stage` (not `register_stage`:
that name registers a trained folder in MLflow, `pipelines.registry.register`). The cascade's
order stays `pipelines.data.contract.STAGES`.
"""

from __future__ import annotations

import importlib
import importlib.util

from pipelines.data.contract import STAGES
from pipelines.stages.base import Stage

_REGISTERED: dict[str, Stage] = {}


def add_stage(impl: Stage) -> Stage:
    """Make `impl` findable by `get_stage(impl.name)` (replacing an earlier registration)."""
    if not isinstance(impl, Stage):
        raise TypeError(f"{impl!r} does not implement pipelines.stages.base.Stage")
    _REGISTERED[impl.name] = impl
    return impl


def remove_stage(name: str) -> None:
    """Forget a stage added with `add_stage` (built-in stages stay findable)."""
    _REGISTERED.pop(name, None)


def stage_names() -> tuple[str, ...]:
    """The cascade's stages in order, then the registered ones."""
    return (*STAGES, *(n for n in _REGISTERED if n not in STAGES))


def get_stage(name: str) -> Stage:
    """The implementation of stage `name`; ValueError naming the choices when there is none."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    impl = _module_impl(name) if name.isidentifier() else None
    if impl is None:
        raise ValueError(f"unknown stage {name!r}; use one of {', '.join(stage_names())}")
    return impl


def _module_impl(name: str) -> Stage | None:
    module_name = f"pipelines.stages.{name}"
    if importlib.util.find_spec(module_name) is None:
        return None
    impl = getattr(importlib.import_module(module_name), "STAGE_IMPL", None)
    return impl if isinstance(impl, Stage) else None
