"""params.yaml `schedule:`: the Prefect deployments and their cadence."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.config.section import Section


class ScheduleConfig(Section):
    """Prefect deployments (flows/lifecycle/deploy.py), registered by `casepilot schedule`."""

    prefect_api_url: str | None = Field(None, description="null = ephemeral / `casepilot up`")
    work_pool: str = Field(
        "casepilot-process", min_length=1, description="process work pool the flows run in"
    )
    retrain_cron: str = Field("0 3 * * *", description="cron of the `retrain` deployment")
    monitor_cron: str = Field("0 * * * *", description="cron of the `monitor` deployment")
    review_cron: str = Field(
        "0 6 * * *", description="cron of the `review` deployment (the day's sample to reviewers)"
    )
    review_collect_cron: str = Field(
        "0 18 * * *",
        description="cron of the `review-collect` deployment (finished labels back, accuracy)",
    )
    timezone: str = Field("UTC", description="IANA time zone the crons are read in")
    retrain_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `retrain` runs every N seconds instead of its cron"
    )
    monitor_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `monitor` runs every N seconds instead of its cron"
    )
    review_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `review` runs every N seconds instead of its cron"
    )
    review_collect_interval_seconds: int | None = Field(
        None,
        ge=1,
        description="when set, `review-collect` runs every N seconds instead of its cron",
    )
    promote_poll_seconds: int = Field(
        60,
        ge=1,
        description="interval of the `promote` deployment: approved challengers are "
        "promoted (and the service reloaded) at most this long after the approval",
    )
    service_url: str | None = Field(
        None,
        description="the BentoML service that promote/rollback ask to reload "
        "(POST /admin/reload); null = the one `casepilot up` started (its supervisord)",
    )
    drift_retrain_stages: tuple[str, ...] | None = Field(
        None,
        description="stages the drift automation retrains (null = all five; the rest keep "
        "their champion until the scheduled retrain)",
    )

    @model_validator(mode="after")
    def _known_stages(self) -> ScheduleConfig:
        from pipelines.data.contract import STAGES

        unknown = sorted(set(self.drift_retrain_stages or ()) - set(STAGES))
        if unknown or self.drift_retrain_stages == ():
            raise ValueError(
                f"drift_retrain_stages: {unknown or 'empty'}; use stages from "
                f"{', '.join(STAGES)}, or null for all"
            )
        return self

    @model_validator(mode="after")
    def _known_timezone(self) -> ScheduleConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA time zone; use e.g. 'UTC' or "
                "'Europe/Berlin'"
            ) from None
        return self
