"""`Admission` and `ClientKey` in-process, with the real `limits` library in memory: who a request counts
against, what holds a slot, and what a resume costs."""

from __future__ import annotations

from typing import Any

import pytest
from limits.storage import storage_from_string
from pydantic import SecretStr

from zantara_rag.errors import BudgetExhausted, RateLimited
from zantara_rag.http.admission import Admission
from zantara_rag.http.client import ClientKey
from zantara_rag.logs import KeyedHash
from zantara_rag.settings import Settings


def admission(**settings: Any) -> Admission:
    defaults: dict[str, Any] = {
        "rate_limit_per_minute": 0,
        "max_streams_per_client": 0,
        "max_concurrent_streams": 0,
        "daily_token_budget": 0,
        "daily_token_budget_per_client": 0,
    }
    storage = storage_from_string("async+memory://")
    return Admission(Settings(**{**defaults, **settings}), storage)  # type: ignore[arg-type]


def scope(address: str, **headers: str) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "client": (address, 50000), "headers": raw}


def key(address: str, subject: str | None = None, **headers: str) -> ClientKey:
    subject_key = KeyedHash(SecretStr("test-key"))(subject) if subject is not None else None
    return ClientKey.of(scope(address, **headers), trust_proxy_headers=True, subject_key=subject_key)


# --- who a request counts against


def test_ipv6_rates_count_per_64_and_budgets_per_48() -> None:
    one, same_64, same_48, other_48 = (
        key("2001:db8:aa:1::1"),
        key("2001:db8:aa:1:ffff::2"),
        key("2001:db8:aa:2::1"),
        key("2001:db8:ab:1::1"),
    )
    assert one == same_64 and one.rate == "2001:db8:aa:1::/64" and one.budget == "2001:db8:aa::/48"
    assert same_48.rate != one.rate and same_48.budget == one.budget
    assert other_48.budget != one.budget


def test_ipv4_and_mapped_addresses_are_one_key() -> None:
    assert key("203.0.113.7") == key("::ffff:203.0.113.7") == ClientKey("203.0.113.7", "203.0.113.7")
    assert key("10.0.0.1", **{"Fly-Client-IP": "203.0.113.9"}).rate == "203.0.113.9"


def test_with_a_token_the_subject_is_the_client_whatever_the_address() -> None:
    alice_here, alice_there = key("203.0.113.7", "alice@example.com"), key("2001:db8::1", "alice@example.com")
    bob_here = key("203.0.113.7", "bob@example.com")
    assert alice_here == alice_there and alice_here.rate == alice_here.budget
    assert bob_here != alice_here
    assert "alice" not in alice_here.rate, "keys may live in Redis: never a subject in the clear"
    # One user whatever the case of the address (as conversations and the team directory see it).
    assert key("198.51.100.1", "Alice@Example.com") == alice_here


# --- slots, windows, budgets


async def test_a_slot_is_held_until_its_ticket_is_released() -> None:
    a = admission(max_streams_per_client=1, max_concurrent_streams=2)
    first = await a.admit(key("203.0.113.1"))
    with pytest.raises(RateLimited, match="answers in progress"):
        await a.admit(key("203.0.113.1"))
    await a.admit(key("203.0.113.2"))
    with pytest.raises(RateLimited, match="as many people"):
        await a.admit(key("203.0.113.3"))
    first.release()
    first.release()  # once only
    assert a.open_streams() == 1
    await a.admit(key("203.0.113.1"))


async def test_a_resume_counts_in_the_per_minute_window_but_takes_no_slot() -> None:
    a = admission(rate_limit_per_minute=3, max_streams_per_client=1)
    client = key("203.0.113.1")
    await a.admit(client)
    await a.admit_resume(client)  # the client's one slot is taken: a resume still gets through
    await a.admit_resume(client)
    with pytest.raises(RateLimited) as refused:
        await a.admit_resume(client)
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60
    assert a.open_streams() == 1


async def test_a_budget_spent_from_one_64_covers_its_whole_48() -> None:
    a = admission(daily_token_budget_per_client=1000, budget_exhausted_mode="error")
    spender = key("2001:db8:aa:1::1")
    (await a.admit(spender)).release()
    await a.spend(spender.budget, 1500)
    with pytest.raises(BudgetExhausted):
        await a.admit(key("2001:db8:aa:77::1"))  # a fresh /64 of the same /48
    (await a.admit(key("2001:db8:ab:1::1"))).release()  # another /48: its own budget


async def test_with_a_token_the_budget_follows_the_subject_across_addresses() -> None:
    a = admission(daily_token_budget_per_client=1000, budget_exhausted_mode="error", rate_limit_per_minute=2)
    await a.spend(key("203.0.113.1", "alice@example.com").budget, 1500)
    with pytest.raises(BudgetExhausted):
        await a.admit(key("198.51.100.9", "alice@example.com"))
    (await a.admit(key("203.0.113.1", "bob@example.com"))).release()  # same address, another user
    (await a.admit(key("203.0.113.1", "bob@example.com"))).release()
    with pytest.raises(RateLimited):
        await a.admit(key("198.51.100.200", "bob@example.com"))  # bob's window, from anywhere
