"""dispatcher.policy: backoff is a pure function of the failure count; nothing sleeps."""

from __future__ import annotations

import pytest

from dispatcher.policy import (
    BACKOFF_INITIAL_S,
    BACKOFF_JITTER_S,
    BACKOFF_MAX_S,
    CircuitPolicy,
    RetryPolicy,
)
from dispatcher.settings import Secret, Settings

DRAWS = 300


def draws(failures: int, retry_after: float | None = None) -> list[float]:
    policy = RetryPolicy()
    return [policy.delay(failures, retry_after) for _ in range(DRAWS)]


def backoff(failures: int) -> float:
    """The delay without jitter: doubling from the first, up to the cap."""
    return min(BACKOFF_INITIAL_S * 2.0 ** min(max(1, failures) - 1, 64), BACKOFF_MAX_S)


@pytest.mark.parametrize("failures", [-3, 0, 1, 2, 3, 4, 5, 6, 8, 20, 10_000])
def test_the_delay_doubles_per_failure_up_to_the_cap_plus_bounded_jitter(failures: int) -> None:
    for d in draws(failures):
        assert backoff(failures) - 1e-9 <= d <= backoff(failures) + BACKOFF_JITTER_S


@pytest.mark.parametrize("failures", [1, 3, 20])
@pytest.mark.parametrize("retry_after", [0.0, 2.5, 45.0, 600.0])
def test_retry_after_is_a_floor_never_a_shortcut(failures: int, retry_after: float) -> None:
    floored = draws(failures, retry_after)

    assert min(floored) >= max(retry_after, backoff(failures)) - 1e-9
    assert max(floored) <= max(retry_after, backoff(failures) + BACKOFF_JITTER_S)


@pytest.mark.parametrize("failures", [1, 2, 5, 20])
def test_calls_that_failed_together_do_not_retry_together(failures: int) -> None:
    values = draws(failures)

    assert len(set(values)) > DRAWS // 2
    assert max(values) - min(values) > BACKOFF_JITTER_S / 4


def test_the_breaker_follows_the_settings_and_never_cools_down_less_than_it_starts() -> None:
    base = {"community_id": "c", "api_key": Secret("policy-key")}
    tuned = CircuitPolicy.from_settings(Settings(**base, circuit_cooldown_s=7.0,
                                                 circuit_max_cooldown_s=90.0))
    inverted = CircuitPolicy.from_settings(Settings(**base, circuit_cooldown_s=120.0,
                                                    circuit_max_cooldown_s=60.0))

    assert (tuned.cooldown_s, tuned.max_cooldown_s) == (7.0, 90.0)
    assert (inverted.cooldown_s, inverted.max_cooldown_s) == (120.0, 120.0)
