"""Server settings, from environment variables prefixed ``AUTOPEFT_`` (or a .env file)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server can be configured with.

    Tokens are comma-separated lists; an empty list of a role means no caller has it.
    """

    model_config = SettingsConfigDict(env_prefix="AUTOPEFT_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///.autopeft/autopeft.db",
                              description="SQLAlchemy URL: SQLite file or PostgreSQL.")
    client_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                     description="Bearer tokens of users (create/read studies).")
    worker_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                     description="Bearer tokens of workers (lease and report).")
    token_cache_seconds: float = Field(
        2.0, ge=0, le=300, description="How long a stored token's lookup is reused: a "
        "token revoked by the CLI or another server process is refused within this time "
        "(at once when revoked through this process's admin routes).")
    lease_seconds: float = Field(120.0, gt=0, description="Lease length; heartbeats extend it.")
    worker_alive_seconds: float = Field(
        60.0, gt=0, description="A worker seen (lease or heartbeat) within this many seconds "
        "counts as alive (the dashboard's workers, autopeft_workers_alive). A training worker "
        "beats at least every 10 s; an idle one asks for a lease every long poll.")
    long_poll_seconds: float = Field(
        10.0, ge=0, le=60, description="How long a lease request waits for a trial.")
    retry_after_seconds: int = Field(2, ge=1, description="Retry-After when nothing is ready.")
    sweep_interval_seconds: float = Field(1.0, gt=0)
    proposer_poll_seconds: float = Field(0.5, gt=0)
    proposer_retry_seconds: float = Field(
        10.0, gt=0, description="Backoff after a study's first failed proposer pass; it "
        "doubles with each failure in a row (other studies go on meanwhile).")
    proposer_processes: int = Field(
        1, ge=0, le=64, description="Child processes that run optimiser fits (one core "
        "each), so that no fit runs in a process serving requests and one study's fit never "
        "holds up another study's proposals; 0: fits run in the proposer thread.")
    proposer_max_retry_seconds: float = Field(600.0, gt=0, description="Cap of that backoff.")
    model_front_wait_seconds: float = Field(
        5.0, ge=0, le=60, description="How long a model-front request (``GET /v1/studies/"
        "{id}/pareto?front=model``) waits for the study's GP fit, which runs in the "
        "background once per new set of observations; past it the answer is the front of "
        "the older predictions (or the observed front) with a note.")
    proposal_time_budget_s: float = Field(
        2.0, gt=0, le=600, description="Seconds one study's sampling may take in a proposer "
        "pass, and seconds after which a pass starts no further study: a study that overruns "
        "queues what it found and yields to the others (round robin), so that no study holds "
        "the proposer.")
    proposer_max_failures: int = Field(
        6, ge=1, description="Failed proposer passes in a row after which a study ends "
        "failed, with the optimiser's error as its reason.")
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body accepted (HTTP 413 above). "
        "A study spec's task_options are capped at 64 KiB, so 1 MiB leaves room.")
    artifact_dir: str = Field(
        ".autopeft/artifacts", description="Folder of the uploaded adapter artefacts (the "
        "local artefact store; ``autopeft serve --artifact-dir`` sets it and creates it at "
        "start); a named volume in docker-compose.")
    max_artifact_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Largest artefact upload accepted (HTTP 413 above). "
        "Full fine-tuning of a base-size encoder stores ~0.5 GB; adapters a few MB.")
    database_pool_size: int = Field(20, ge=1)
    request_threads: int = Field(
        8, ge=1, le=1000, description="Threads running requests' database work (anyio's "
        "default is 40; 4-8 gave a lower p99 and no less throughput at 200 workers on "
        "2 cores, benchmarks/service_load.py).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("client_tokens", "worker_tokens", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value
