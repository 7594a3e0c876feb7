"""Key and provider health and the retry budget, on plain data with a clock the test turns."""

from tollgate.core.health import Health, RetryBudget, State


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_429_cools_a_key_for_its_retry_after_and_a_401_takes_it_out():
    clock = Clock()
    health = Health(failures=3, cooldown_s=10, clock=clock)
    health.outcome("openai", "k1", 429, "7")
    health.outcome("openai", "k2", 401)
    assert (health.key_state("openai", "k1"), health.key_state("openai", "k2")) == ("cooling", "out")
    clock.now += 7.01
    assert health.key_usable("openai", "k1") and not health.key_usable("openai", "k2")
    health.outcome("openai", "k3", 429, "not a number")  # the default 60 s
    clock.now += 59
    assert not health.key_usable("openai", "k3")
    assert health.provider_state("openai") == "closed", "a key's trouble is not the provider's"


def test_the_breaker_opens_probes_once_and_closes():
    clock = Clock()
    health = Health(failures=3, cooldown_s=10, clock=clock)
    for status in (503, None, 500):
        health.outcome("p", "", status)
    assert health.provider_state("p") == "open" and not health.provider_usable("p")
    clock.now += 10
    assert health.provider_usable("p") and not health.provider_usable("p"), "one probe at a time"
    health.outcome("p", "", 502)  # the probe failed: open again at once
    assert health.provider_state("p") == "open"
    clock.now += 10
    assert health.provider_usable("p")
    health.outcome("p", "", 200)
    assert health.provider_state("p") == "closed" and health.provider_usable("p") and health.provider_usable("p")


def test_a_success_in_between_resets_the_count():
    health = Health(failures=2, cooldown_s=10, clock=Clock())
    for status in (503, 200, 503):
        health.outcome("p", "", status)
    assert health.provider_state("p") == "closed"


def test_the_latest_decision_wins_across_replicas():
    health = Health(failures=2, cooldown_s=10, clock=Clock())
    health.outcome("p", "k", 429, "30")
    mine = health.states["key:p:k"]
    assert not health.merge("key:p:k", State(0, mine.since - 1, "older"))
    assert health.merge("key:p:k", State(0, mine.since + 1, "closed by another replica"))
    assert health.key_usable("p", "k")


def test_the_retry_budget_follows_the_last_minute():
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_minute=2, clock=clock)
    for _ in range(50):
        budget.called()
    assert sum(budget.try_retry() for _ in range(20)) == 5  # 10% of 50
    clock.now += 61  # the minute has passed: only the floor is left
    assert sum(budget.try_retry() for _ in range(20)) == 2
