"""dispatcher.policy: backoff is a pure function of the failure count; nothing sleeps."""

from __future__ import annotations

import statistics

import pytest

from dispatcher.policy import (
    BACKOFF_INITIAL_S,
    BACKOFF_JITTER_S,
    BACKOFF_MAX_S,
    CIRCUIT_FAILURE_THRESHOLD,
    MAX_SLOT_WAIT_S,
    CircuitPolicy,
    RetryPolicy,
)
from dispatcher.settings import (
    DEFAULT_CIRCUIT_COOLDOWN_S as CIRCUIT_COOLDOWN_S,
)
from dispatcher.settings import (
    DEFAULT_CIRCUIT_MAX_COOLDOWN_S as CIRCUIT_MAX_COOLDOWN_S,
)

DRAWS = 300


def draws(failures: int, retry_after: float | None = None) -> list[float]:
    policy = RetryPolicy()
    return [policy.delay(failures, retry_after) for _ in range(DRAWS)]


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 6])
def test_delay_grows_exponentially_plus_bounded_jitter(failures: int) -> None:
    base = BACKOFF_INITIAL_S * 2 ** (failures - 1)

    for d in draws(failures):
        assert base <= d <= base + BACKOFF_JITTER_S


def test_each_failure_roughly_doubles_the_mean_delay() -> None:
    means = [statistics.mean(draws(n)) for n in range(1, 7)]

    assert all(later > earlier * 1.5 for earlier, later in zip(means, means[1:], strict=False))


@pytest.mark.parametrize("failures", [8, 20, 100, 10_000])
def test_delay_is_capped_near_the_maximum(failures: int) -> None:
    for d in draws(failures):
        assert BACKOFF_MAX_S - 1e-9 <= d <= BACKOFF_MAX_S + BACKOFF_JITTER_S


def test_zero_or_negative_failures_count_as_the_first() -> None:
    for n in (0, -3):
        assert all(BACKOFF_INITIAL_S <= d <= BACKOFF_INITIAL_S + BACKOFF_JITTER_S
                   for d in draws(n)[:20])


@pytest.mark.parametrize("failures", [1, 3, 20])
@pytest.mark.parametrize("retry_after", [0.0, 2.5, 45.0, 600.0])
def test_retry_after_is_a_floor(failures: int, retry_after: float) -> None:
    plain = draws(failures)
    floored = draws(failures, retry_after)

    assert all(d >= retry_after for d in floored)
    # A short Retry-After does not shorten the backoff either.
    assert min(floored) >= min(min(plain), retry_after) - 1e-9


@pytest.mark.parametrize("failures", [1, 2, 5])
def test_delays_are_jittered(failures: int) -> None:
    values = draws(failures)

    assert len(set(values)) > DRAWS // 2
    assert max(values) - min(values) > BACKOFF_JITTER_S / 4


def test_delays_at_the_cap_are_jittered_too() -> None:
    assert len(set(draws(20))) > 1


def test_max_delay_field_matches_the_cap() -> None:
    assert RetryPolicy().max_delay_s == BACKOFF_MAX_S + BACKOFF_JITTER_S


def test_circuit_policy_defaults() -> None:
    c = CircuitPolicy()

    assert c.failure_threshold == CIRCUIT_FAILURE_THRESHOLD == 5
    assert c.cooldown_s == CIRCUIT_COOLDOWN_S <= c.max_cooldown_s == CIRCUIT_MAX_COOLDOWN_S
    assert c.max_slot_wait_s == MAX_SLOT_WAIT_S
    assert c.rate_limit_pause_s > 0
