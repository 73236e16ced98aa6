"""Leader election: one lock holder per database, handed over on release or death."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from autopeft_service.storage.database import make_engine
from autopeft_service.storage.leader import (
    AlwaysLeader,
    FileLeaderLock,
    PostgresLeaderLock,
    leader_lock_for,
)


def test_lock_kind_follows_the_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", pool_size=1)
    lock = leader_lock_for(engine)
    assert isinstance(lock, FileLeaderLock) and lock.path == tmp_path / "a.db.leader"
    assert isinstance(leader_lock_for(create_engine("sqlite://")), AlwaysLeader)
    engine.dispose()


def test_one_file_lock_holder_then_hand_over(tmp_path: Path) -> None:
    first, second = FileLeaderLock(tmp_path / "x.leader"), FileLeaderLock(tmp_path / "x.leader")
    assert first.try_acquire()
    assert first.try_acquire()  # re-entrant for its holder
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()


def _hold_file_lock(path: str, ready: multiprocessing.synchronize.Event) -> None:
    lock = FileLeaderLock(Path(path))
    assert lock.try_acquire()
    ready.set()
    time.sleep(600)


def test_a_killed_holder_loses_the_file_lock(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_file_lock, args=(str(tmp_path / "x.leader"), ready))
    holder.start()
    try:
        assert ready.wait(60)
        mine = FileLeaderLock(tmp_path / "x.leader")
        assert not mine.try_acquire()
        holder.kill()
        holder.join(10)
        assert mine.try_acquire()
        mine.release()
    finally:
        holder.kill()


def test_postgres_advisory_lock_one_holder_release_and_lost_session(
        postgres_admin_url: str) -> None:
    from autopeft_service.testing.postgres import create_database

    url = create_database(postgres_admin_url)
    engines = [make_engine(url, pool_size=2) for _ in range(2)]
    first, second = (PostgresLeaderLock(e, key=4242) for e in engines)
    try:
        assert first.try_acquire() and first.try_acquire()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()
        # The holder's session dies (a crash, a network cut): the lock is free at once,
        # and the old holder notices on its next call.
        with engines[0].connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                               "WHERE locktype = 'advisory' AND objid = 4242"))
            admin.commit()
        deadline = time.monotonic() + 10
        while not first.try_acquire():
            assert time.monotonic() < deadline, "lock never freed"
            time.sleep(0.1)
        assert not second.try_acquire()
    finally:
        first.release()
        second.release()
        for engine in engines:
            engine.dispose()


def test_release_is_idempotent(tmp_path: Path) -> None:
    lock = FileLeaderLock(tmp_path / "y.leader")
    lock.release()
    assert lock.try_acquire()
    lock.release()
    lock.release()
