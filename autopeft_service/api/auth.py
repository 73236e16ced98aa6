"""Bearer tokens to callers (``Principal``): the environment's tokens, then the database's.

The environment's tokens (``AUTOPEFT_CLIENT_TOKENS``, ``AUTOPEFT_WORKER_TOKENS``) act for
the ``default`` tenant: client tokens as members, worker tokens in the shared pool, so a
single-user set-up and the demo need no tenant. Stored tokens (``autopeft admin token
create``) are looked up by their SHA-256 and remembered for ``cache_seconds``: a lease or
heartbeat then costs no query for its token, and a revocation made elsewhere (the CLI,
another server process) takes effect within that time; one made through this process's
admin routes at once (``forget``).
"""

from __future__ import annotations

import threading
import time

from autopeft_service.domain.tenancy import DEFAULT_TENANT, Principal, Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database

#: The ``default`` tenant's id (migration 0007 creates it first).
DEFAULT_TENANT_ID = 1
#: Cached lookups kept at most (the cache empties when full: unknown tokens cannot grow it
#: without bound).
_MAX_CACHED = 10_000


class TokenResolver:
    """Who a bearer token is.

    Args:
        database: where stored tokens live.
        client_tokens: the environment's client tokens (``default`` members).
        worker_tokens: the environment's worker tokens (shared pool).
        cache_seconds: how long a stored token's lookup (found or not) is reused.

    Raises:
        ValueError: a token is both a client and a worker token.
    """

    def __init__(self, database: Database, client_tokens: list[str],
                 worker_tokens: list[str], cache_seconds: float = 2.0) -> None:
        both = set(client_tokens) & set(worker_tokens)
        if both:
            raise ValueError("a token is in both AUTOPEFT_CLIENT_TOKENS and "
                             "AUTOPEFT_WORKER_TOKENS: give people and workers different tokens")
        self._database = database
        self._environment = {
            **{t: Principal(DEFAULT_TENANT_ID, DEFAULT_TENANT, Role.MEMBER)
               for t in client_tokens},
            **{t: Principal(DEFAULT_TENANT_ID, DEFAULT_TENANT, Role.WORKER, shared_pool=True)
               for t in worker_tokens}}
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """Without touching the database: (known, principal). ``known`` False means the
        token must be looked up (``lookup``)."""
        principal = self._environment.get(token)
        if principal is not None:
            return True, principal
        entry = self._cache.get(repo.token_digest(token))
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def lookup(self, token: str) -> Principal | None:
        """The token's caller, from the cache or the database (blocking: call it from a
        worker thread); None when unknown, revoked or expired."""
        known, principal = self.cached(token)
        if known:
            return principal
        with self._database.read_session() as session:
            principal = repo.principal_for_token(session, token)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[repo.token_digest(token)] = (
                time.monotonic() + self._cache_seconds, principal)
        return principal

    def forget(self) -> None:
        """Drop every cached lookup (a token was revoked here: it fails from now on)."""
        with self._lock:
            self._cache.clear()
