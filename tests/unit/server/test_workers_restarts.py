"""The restart policy of `tokentill serve --workers N` (api/workers.py), without processes."""
from __future__ import annotations

from api.workers import GIVE_UP, MAX_BACKOFF_S, STABLE_S, Restarts


def test_a_worker_that_keeps_dying_soon_backs_off_doubling_then_gives_up():
    restarts = Restarts()
    delays = [restarts.died(1.0) for _ in range(GIVE_UP)]
    assert delays[:-1] == [0.5, 1.0, 2.0, 4.0][:GIVE_UP - 1]
    assert all(d <= MAX_BACKOFF_S for d in delays[:-1])
    assert delays[-1] is None


def test_a_worker_that_ran_a_while_before_it_died_starts_the_backoff_afresh():
    restarts = Restarts()
    for _ in range(GIVE_UP - 1):
        restarts.died(1.0)
    assert restarts.died(STABLE_S) == 0.5
    assert restarts.died(1.0) == 1.0
