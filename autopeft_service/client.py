"""The Python client of the search service, for users (submit, follow and read studies).

A thin synchronous wrapper over the ``/v1/studies`` routes that parses the server's JSON
into the typed view models of ``autopeft_service.domain.views`` (``StudyOut``,
``TrialSummary``, ``ParetoOut``) and turns every failure into one readable ``ClientError``
line. It needs
only httpx, pydantic and PyYAML (no torch, transformers or SQLAlchemy), so it runs on a
laptop that talks to a remote server::

    from autopeft_service.client import AutopeftClient, load_spec

    spec = load_spec("examples/study_rte_minilm.yaml")       # ConfigError names the field
    with AutopeftClient("http://127.0.0.1:8000", token="client-secret") as client:
        study = client.submit(spec)                           # or a dict, or the file path
        final = client.watch(study.id, lambda s: print(s.counts), interval=5)
        for trial in client.pareto(study.id).trials:
            print(trial.number, trial.config_description, trial.objective, trial.param_share)

Errors: ``ConfigError`` for a spec that does not validate (before anything is sent);
``ClientError`` for everything the server or the network says, e.g.
``HTTP 404 Not Found: study 7 does not exist``,
``HTTP 422 Unprocessable Content: body.budget.total_trials: Input should be ...``,
``cannot reach the server at http://127.0.0.1:8000: [Errno 111] Connection refused``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from autopeft_service.domain.artifact import ArtifactManifest
from autopeft_service.domain.artifact import unpack as unpack_artifact
from autopeft_service.domain.backbone import BackboneDims, packaged_dims
from autopeft_service.domain.errors import AutopeftError, ConfigError
from autopeft_service.domain.study import FINAL_STUDY_STATES as _FINAL_STATES
from autopeft_service.domain.study import StudySpec
from autopeft_service.domain.tenancy import UsageOut
from autopeft_service.domain.validation import parse_model
from autopeft_service.domain.views import (
    ParetoOut,
    StudyOut,
    StudyPage,
    TrialPage,
    TrialSummary,
)
from autopeft_service.domain.warm_start import with_warm_start

__all__ = ["DEFAULT_SERVER", "FINAL_STUDY_STATES", "AutopeftClient", "ClientError",
           "ended_trials", "load_spec"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
#: Study states after which nothing changes any more.
FINAL_STUDY_STATES = tuple(state.value for state in _FINAL_STATES)
#: Trial states that used up a slot of the budget (what "done" counts in progress).
_ENDED_TRIAL_STATES = ("completed", "failed", "pruned")
_Model = TypeVar("_Model", bound=BaseModel)


def check_server_url(url: str) -> str:
    """A server URL without its trailing slash, checked before any request.

    Raises:
        ConfigError: not an http(s) URL with a host and a port from 1 to 65535 (httpx would
            raise its own InvalidURL, a traceback in a command).
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ConfigError(f"--server: {url!r} is not a URL ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"--server: {url!r} is not an http:// or https:// URL with a host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ConfigError(f"--server: {url!r}: the port must be from 1 to 65535")
    return url.rstrip("/")


class ClientError(AutopeftError):
    """The server refused a request, or could not be reached. The message is one line.

    Attributes:
        status_code: the HTTP status, or None when no answer came (network trouble).
        detail: the server's ``detail`` formatted as one line (or the network error).
        transient: True for trouble that may pass by itself (no answer, timeouts, 5xx).
    """

    def __init__(self, message: str, status_code: int | None = None, detail: str = "",
                 transient: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail or message
        self.transient = transient


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def format_detail(body: Any) -> str:
    """The server's ``detail`` as one line: a string as it is; a validation list (422) as
    ``field.path: reason`` joined by ``; ``."""
    detail = body.get("detail", body) if isinstance(body, Mapping) else body
    if isinstance(detail, str):
        return _one_line(detail)
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "__root__")
                message = str(item.get("msg", "")).removeprefix("Value error, ")
                parts.append(f"{loc}: {message}" if loc else message)
            else:
                parts.append(str(item))
        return _one_line("; ".join(parts))
    return _one_line(json.dumps(detail))


def backbone_dims_of(model: str | Path) -> BackboneDims | None:
    """The dimensions of a packaged model name or of a model folder from its
    ``config.json``, or None when there is no readable, supported config there (a hub
    name, a folder only the workers see)."""
    named = packaged_dims(str(model))
    if named is not None:
        return named
    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        return BackboneDims.from_hf_config(config)
    except (OSError, ValueError, ConfigError):
        return None


def with_backbone_dims(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (spec fields) with ``backbone_dims`` read from the backbone folder's
    config.json when the spec leaves them out and the folder is readable here."""
    if data.get("backbone_dims") is None and isinstance(data.get("backbone"), str):
        dims = backbone_dims_of(data["backbone"])
        if dims is not None:
            data = {**data, "backbone_dims": dims.model_dump()}
    return data


def load_spec(path: str | Path) -> StudySpec:
    """Read a study specification from a YAML or JSON file (``.json`` is read as JSON, any
    other name as YAML, which JSON is a subset of) and validate it.

    Raises:
        ConfigError: the file is missing or unreadable, does not parse, is not a mapping, or
            a field is invalid; the message starts with the path and names the field
            (``spec.yaml: budget.total_trials: Input should be greater than or equal to 1``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(error, "problem", None) or str(error)
            raise ConfigError(f"{path}: not valid YAML ({where}{_one_line(problem)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping of spec fields (name, backbone, task, "
                          f"search_space, ...), got {type(data).__name__}")
    try:
        return parse_model(StudySpec, with_backbone_dims(data))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def ended_trials(study: StudyOut) -> int:
    """Trials of a study that used up their budget slot (completed, failed or pruned)."""
    return sum(int(study.counts.get(state, 0)) for state in _ENDED_TRIAL_STATES)


class AutopeftClient:
    """A user's connection to the search server (bearer token of a reader, member or admin).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: a client bearer token (``AUTOPEFT_CLIENT_TOKENS`` on the server).
        timeout: seconds per HTTP request.
        page_size: items asked per page when a list is followed through its pages.
    """

    def __init__(self, base_url: str = DEFAULT_SERVER, token: str = "", timeout: float = 30.0,
                 page_size: int = 500) -> None:
        self.base_url = check_server_url(base_url)
        self.timeout = timeout
        self.page_size = page_size
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the JSON body of a 2xx answer.

        Raises:
            ClientError: any non-2xx answer, or no answer at all.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise ClientError(f"the server at {self.base_url} did not answer {method} {path} "
                              f"within {self.timeout:g} s ({type(error).__name__})",
                              transient=True) from None
        except httpx.TransportError as error:
            reason = _one_line(str(error) or type(error).__name__)
            raise ClientError(f"cannot reach the server at {self.base_url}: {reason}",
                              transient=True) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ClientError(f"{method} {path}: the server at {self.base_url} answered "
                                  f"HTTP {response.status_code} with a body that is not JSON",
                                  response.status_code) from None
        try:
            detail = format_detail(response.json())
        except ValueError:
            detail = _one_line(response.text) or "(no detail)"
        phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
        raise ClientError(f"HTTP {response.status_code}{phrase}: {detail}",
                          response.status_code, detail,
                          transient=response.status_code >= 500)

    def _parse(self, model: type[_Model], body: Any, what: str) -> _Model:
        """``body`` (a 2xx answer's JSON) as ``model``.

        Raises:
            ClientError: the body is not a ``model`` (a server of another version).
        """
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise ClientError(f"{what}: the server at {self.base_url} answered with a body "
                              f"that is not a {model.__name__} ({error.error_count()} "
                              f"invalid fields; a server of another version?)") from None

    def _get(self, model: type[_Model], method: str, path: str, **kwargs: Any) -> _Model:
        """Send one request and parse its 2xx answer as ``model`` (see ``_request``)."""
        return self._parse(model, self._request(method, path, **kwargs), f"{method} {path}")

    def _studies(self, path: str, params: dict[str, Any], page_size: int) -> list[StudyOut]:
        """Every study of a paginated list (follows ``offset`` until ``total``)."""
        items: list[StudyOut] = []
        while True:
            page = self._get(StudyPage, "GET", path, params={
                **params, "offset": len(items), "limit": page_size})
            items.extend(page.items)
            if not page.items or len(items) >= page.total:
                return items

    def _trials(self, path: str, params: dict[str, Any], page_size: int) -> list[TrialSummary]:
        """Every trial of a paginated list (follows ``offset`` until ``total``)."""
        items: list[TrialSummary] = []
        while True:
            page = self._get(TrialPage, "GET", path, params={
                **params, "offset": len(items), "limit": page_size})
            items.extend(page.items)
            if not page.items or len(items) >= page.total:
                return items

    # ------------------------------------------------------------------ studies

    def submit(self, spec: StudySpec | Mapping[str, Any] | str | Path,
               warm_start: Sequence[int] | None = None,
               warm_start_mode: str | None = None) -> StudyOut:
        """Start a study; returns it as a ``StudyOut`` (id, state, counts, ...).

        Args:
            spec: a StudySpec, a mapping of its fields, or the path of a YAML/JSON file.
            warm_start: earlier studies of the same family to learn from (replaces the
                spec's ``warm_start.from_studies``).
            warm_start_mode: ``model`` or ``seed`` (``domain.warm_start``).

        Raises:
            ConfigError: the spec is invalid (checked here, before anything is sent).
            ClientError: the server refused it (e.g. 422 ``optimizer.name``) or is unreachable.
        """
        if isinstance(spec, (str, Path)):
            spec = load_spec(spec)
        elif not isinstance(spec, StudySpec):
            spec = parse_model(StudySpec, with_backbone_dims(dict(spec)))
        elif spec.backbone_dims is None:
            spec = parse_model(StudySpec, with_backbone_dims(spec.model_dump(mode="json")))
        if warm_start or warm_start_mode:
            spec = with_warm_start(spec, warm_start, warm_start_mode)
        return self._get(StudyOut, "POST", "/v1/studies", json=spec.model_dump(mode="json"))

    def status(self, study_id: int) -> StudyOut:
        """One study as a ``StudyOut``: state, counts by trial state, best trial,
        hypervolume, Pareto size, total_trials and the spec."""
        return self._get(StudyOut, "GET", f"/v1/studies/{int(study_id)}")

    def usage(self) -> list[UsageOut]:
        """The caller's tenant's use against its quotas (every tenant's for an admin)."""
        body = self._request("GET", "/v1/usage")
        if not isinstance(body, list):
            raise ClientError(f"GET /v1/usage: the server at {self.base_url} answered with "
                              "a body that is not a list (a server of another version?)")
        return [self._parse(UsageOut, item, "GET /v1/usage") for item in body]

    def list_studies(self) -> list[StudyOut]:
        """Every study as a ``StudyOut``, oldest first, across all pages."""
        return self._studies("/v1/studies", {}, min(self.page_size, 100))

    def trials(self, study_id: int, state: str | None = None) -> list[TrialSummary]:
        """The study's trials as ``TrialSummary`` models, all pages, optionally of one state
        (ready, leased, completed, failed, cancelled, pruned)."""
        params = {"state": state} if state else {}
        return self._trials(f"/v1/studies/{int(study_id)}/trials", params, self.page_size)

    def trial(self, study_id: int, number: int) -> TrialSummary:
        """Trial ``number`` (the ``#`` of ``autopeft pareto``) of a study, as a
        ``TrialSummary``.

        Raises:
            ClientError: no such study (404 from the server) or no such trial (404 here).
        """
        for trial in self.trials(study_id):
            if trial.number == number:
                return trial
        raise ClientError(f"HTTP 404 Not Found: study {study_id} has no trial {number}", 404)

    def download_artifact(self, study_id: int, number: int, directory: str | Path
                          ) -> ArtifactManifest:
        """Download trial ``number``'s adapter artefact into ``directory`` (created; must be
        empty or absent), checking its SHA-256 against the server's and its contents.

        Returns:
            The artefact's manifest.

        Raises:
            ClientError: no such study or trial, no artefact yet (404), or the transfer
                failed or arrived damaged.
            ArtifactError: ``directory`` is not empty, or the artefact does not check out.
        """
        trial = self.trial(study_id, number)
        path = f"/v1/trials/{trial.id}/artifact"
        try:
            response = self._http.get(path)
        except httpx.TransportError as error:
            raise ClientError(f"cannot download {path} from {self.base_url}: "
                              f"{_one_line(str(error) or type(error).__name__)}",
                              transient=True) from None
        if not response.is_success:
            try:
                detail = format_detail(response.json())
            except ValueError:
                detail = _one_line(response.text) or "(no detail)"
            raise ClientError(f"HTTP {response.status_code}: {detail}", response.status_code,
                              detail)
        data = response.content
        expected = response.headers.get("x-artifact-sha256", "")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ClientError(f"{path}: the download's SHA-256 {actual} differs from the "
                              f"server's {expected}: damaged in transit, try again",
                              transient=True)
        return unpack_artifact(data, directory)

    def pareto(self, study_id: int, front: str = "observed") -> ParetoOut:
        """The Pareto front as a ``ParetoOut``: ``trials`` ordered by parameter share, the
        hypervolume and its reference point. ``front="model"``: the front of the model's
        predicted full-training scores, each trial with ``predicted`` (mean and 90 %
        interval); the observed front with a ``note`` when the model has too few
        observations."""
        suffix = "" if front == "observed" else f"?front={front}"
        return self._get(ParetoOut, "GET", f"/v1/studies/{int(study_id)}/pareto{suffix}")

    def cancel(self, study_id: int) -> StudyOut:
        """Stop a study (queued and running trials become cancelled); returns it as a
        ``StudyOut``."""
        return self._get(StudyOut, "POST", f"/v1/studies/{int(study_id)}/cancel")

    def watch(self, study_id: int, on_update: Callable[[StudyOut], None] | None = None,
              interval: float = 2.0, stop_when_done: bool = True,
              timeout: float | None = None, patience: float = 60.0,
              stop: threading.Event | None = None) -> StudyOut:
        """Poll a study every ``interval`` seconds, calling ``on_update`` with each reading
        (every poll, changed or not), until it is completed or cancelled.

        Args:
            on_update: called with the study (a ``StudyOut``) after each poll.
            interval: seconds between polls.
            stop_when_done: return once the study is completed or cancelled; when False,
                keep polling until ``timeout``.
            timeout: return the last reading after this many seconds (None: no limit).
            patience: after the first reading, transient trouble (server restarting,
                unreachable, 5xx) is retried for up to this many seconds since the last
                good reading before it is raised.
            stop: when set (e.g. by a SIGINT handler), KeyboardInterrupt is raised at the
                next safe point: between requests, never inside one (an interrupt inside
                the HTTP pool could leave its lock held and hang the client's close).

        Returns:
            The last reading of the study (a ``StudyOut``).

        Raises:
            ClientError: the first reading fails, a non-transient error, or transient
                trouble lasting longer than ``patience``.
        """
        start = time.monotonic()
        study = self.status(study_id)  # unknown id, bad token, no server: raise at once
        last_good = time.monotonic()
        fresh = True
        while True:
            if fresh and on_update is not None:
                on_update(study)
            if stop_when_done and study.state in FINAL_STUDY_STATES:
                return study
            if timeout is not None and time.monotonic() - start >= timeout:
                return study
            if stop is None:
                time.sleep(interval)
            elif stop.is_set() or stop.wait(interval):
                raise KeyboardInterrupt
            try:
                study, fresh = self.status(study_id), True
                last_good = time.monotonic()
            except ClientError as error:
                if not error.transient or time.monotonic() - last_good > patience:
                    raise
                fresh = False
