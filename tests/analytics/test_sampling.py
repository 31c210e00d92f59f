"""`sample=`: a funnel answered from a deterministic sample of users, with scaled counts and intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from funnels.analytics.funnel import buckets_from_rows, build_response, run_funnel
from funnels.analytics.query import QueryValidationError, parse_funnel_query, sample_threshold
from funnels.analytics.reference import reference_funnel, siphash64
from funnels.analytics.sampling import Z, count_interval, wilson
from funnels.analytics.sql import funnel_statement
from funnels.services import Services
from funnels.store.events import PERSONS_DICTIONARY, ClusterLayout, EventStore
from tests.analytics.conftest import at, both, day, ev, funnel_query, load, step
from tests.analytics.test_aggregate_by import check_grouped, grouped, organizations, run
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_hold_constant import holding
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)
from tests.analytics.test_sql_cluster import check as cluster_check
from tests.analytics.test_sql_cluster import distributed

STEPS = [step("page", "page"), step("track", "connect"), step("track", "swap")]


def crowd(size: int) -> list:  # type: ignore[type-arg]
    """`size` users: all view a page, two in three connect, one in three of those swaps."""
    events = []
    for i in range(size):
        user = f"user-{i}"
        events.append(ev(user, at(0, i), "page"))
        if i % 3:
            events.append(ev(user, at(0, i + 60_000), "track", "connect"))
            if i % 9 == 1:
                events.append(ev(user, at(0, i + 120_000), "track", "swap"))
    return events


def test_a_sample_counts_the_users_whose_hash_is_under_the_bound_and_scales_them(store: EventStore) -> None:
    events = crowd(300)
    load(store, events)
    query = funnel_query(STEPS, identity="raw", sample="0.25")
    body = run_funnel(store, query)
    bound = sample_threshold(0.25)
    assert bound is not None
    inside = [f"user-{i}" for i in range(300) if siphash64(f"user-{i}") < bound]
    assert 40 < len(inside) < 110  # a quarter of 300, give or take: the hash spreads users evenly
    first = body["data"][0]
    assert first["users_sampled"] == len(inside)
    assert first["users"] == round(len(inside) / 0.25)
    assert first["total"] == first["users"]
    assert body["sample"]["users_sampled"] == len(inside)
    assert body["sample"] | {"users_sampled": 0} == {
        "rate": 0.25,
        "unit": "user_key",
        "users_sampled": 0,
        "scale": 4.0,
        "confidence": 0.95,
        "method": "score intervals with finite-population correction (docs/semantics.md, Sampling)",
    }
    connected = sum(1 for user in inside if int(user.split("-")[1]) % 3)
    second = body["data"][1]
    assert second["users_sampled"] == connected
    assert second["conversion_from_previous"] == round(connected / len(inside), 4)  # the sample's own ratio
    low, high = second["conversion_from_previous_interval"]
    assert low < second["conversion_from_previous"] < high
    assert second["users_interval"][0] <= second["users"] <= second["users_interval"][1]
    names = [column["name"] for column in body["meta"]]
    assert names[-4:] == [
        "users_sampled",
        "users_interval",
        "conversion_from_start_interval",
        "conversion_from_previous_interval",
    ]
    assert list(second)[len(names) - 4 :] == names[-4:]  # rows carry the columns meta lists, in order
    assert body["data"] == reference_funnel(query, events)["data"]


def test_without_a_sample_or_with_sample_1_the_answer_is_the_exact_one(store: EventStore) -> None:
    events = crowd(60)
    load(store, events)
    exact = run_funnel(store, funnel_query(STEPS))
    whole = run_funnel(store, funnel_query(STEPS, sample="1"))
    assert "sample" not in exact and "users_sampled" not in exact["data"][0]
    assert whole["data"] == exact["data"] and whole["meta"] == exact["meta"] and "sample" not in whole
    assert [row["users"] for row in exact["data"]] == [60, 40, 7]


def test_a_smaller_sample_is_a_subset_of_a_larger_one(store: EventStore) -> None:
    load(store, crowd(300))
    counts = [
        run_funnel(store, funnel_query(STEPS, sample=rate))["data"][0]["users_sampled"]
        for rate in ("0.1", "0.3", "0.6")
    ]
    assert counts == sorted(counts) and counts[0] < counts[2]


def test_a_stitched_sample_keeps_or_drops_a_person_with_all_their_keys(store: EventStore) -> None:
    """A person whose anonymous id hashes into the sample but whose user id does not is left out whole,
    and the other way round: the sample is of persons (the hash of the id their keys link to)."""
    bound = sample_threshold(0.5)
    assert bound is not None
    anonymous = [f"anon-{i}" for i in range(200)]
    inside = next(a for a in anonymous if siphash64(a) < bound)
    outside = next(a for a in anonymous if siphash64(a) >= bound)
    ids = [f"person-{i}" for i in range(200)]
    in_person = next(p for p in ids if siphash64(p) < bound)
    out_person = next(p for p in ids if siphash64(p) >= bound)
    events = []
    for anon, person in ((inside, out_person), (outside, in_person)):
        events += [
            ev("", at(0, 1000), "page", anonymous_id=anon),  # step 1 before sign-up, anonymous
            ev(person, at(0, 2000), "identify", anonymous_id=anon),
            ev(person, at(0, 3000), "track", "connect"),
        ]
    load(store, events)
    query = funnel_query(STEPS, sample="0.5")
    body = run_funnel(store, query)
    assert [row["users_sampled"] for row in body["data"]] == [1, 1, 0]  # in_person's page and connect
    assert body["data"] == reference_funnel(query, events)["data"]
    assert body["sample"]["unit"] == "person"
    raw = run_funnel(store, replace(query, identity="raw"))  # raw: each key on its own hash
    assert raw["data"] == reference_funnel(replace(query, identity="raw"), events)["data"]


def test_a_sampled_breakdown_and_open_funnel_equal_the_reference(store: EventStore) -> None:
    events = [ev(f"u{i}", at(0, i), "page", utm_source=["ads", "mail", "blog"][i % 3]) for i in range(90)] + [
        ev(f"u{i}", at(0, 5000 + i), "track", "connect") for i in range(0, 90, 2)
    ]
    load(store, events)
    for params in ({"breakdown": "utm_source"}, {"funnel_type": "open"}):
        query = funnel_query(STEPS[:2], sample="0.4", **params)
        body = run_funnel(store, query)
        assert body["data"] == reference_funnel(query, events)["data"]
        assert sum(row["users_sampled"] for row in body["data"] if row["step"] == 1) < 90


@pytest.mark.parametrize(
    "value", ["0", "-0.1", "1.5", "abc", "0.00001", "nan", "inf", "1e-1", " ", "10%", "0.1234567"]
)
def test_a_bad_sample_is_reported_by_name(value: str) -> None:
    with pytest.raises(QueryValidationError) as raised:
        parse_funnel_query(
            {
                "date_from": day(0),
                "date_to": day(1),
                "steps": '[{"type":"page","event":"page","name":"a"},'
                '{"type":"page","event":"home","name":"b"}]',
                "sample": value,
            }
        )
    assert raised.value.param == "sample" and set(raised.value.details) == {"sample"}


@pytest.mark.parametrize(
    ("value", "rate"), [("0.1", 0.1), (".5", 0.5), ("0.0001", 0.0001), ("1.0", None), ("", None)]
)
def test_a_good_sample_parses(value: str, rate: float | None) -> None:
    query = funnel_query(STEPS, sample=value)
    assert query.sample == rate


def test_wilson_without_correction_is_statsmodels_wilson() -> None:
    assert norm.ppf(0.975) == pytest.approx(Z, abs=1e-12)
    for successes, trials in ((0, 10), (3, 10), (10, 10), (412, 1000), (1, 100_000)):
        ours = wilson(successes, trials)
        assert ours is not None
        theirs = proportion_confint(successes, trials, alpha=0.05, method="wilson")
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_the_finite_population_correction_is_wilson_with_z_squared_times_1_minus_rate() -> None:
    for successes, trials, rate in ((3, 10, 0.5), (412, 1000, 0.1), (0, 50, 0.9), (50, 50, 0.25)):
        z2 = Z * Z * (1 - rate)  # the closed form, written out: center ± half over 1 + z²/n
        share = successes / trials
        denominator = 1 + z2 / trials
        center = (share + z2 / (2 * trials)) / denominator
        half = math.sqrt(z2 * (share * (1 - share) / trials + z2 / (4 * trials * trials))) / denominator
        assert wilson(successes, trials, rate) == pytest.approx((center - half, center + half), abs=1e-9)


def test_intervals_narrow_with_the_rate_and_close_at_1() -> None:
    assert wilson(40, 100, rate=1.0) == pytest.approx((0.4, 0.4))
    wide, narrow = wilson(40, 100, rate=0.01), wilson(40, 100, rate=0.5)
    assert wide is not None and narrow is not None
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert wilson(0, 0, 0.1) is None
    assert count_interval(50, 1.0) == (50, 50)
    low, high = count_interval(100, 0.1)  # 1000 estimated: about ±1.96·√(100·0.9)/0.1 = ±186
    assert 800 < low < 1000 < high < 1220
    assert count_interval(0, 0.1) == (0, 35)  # nobody seen: at most 35 (exactly: (1 − 0.1)^35 ≈ 0.025)


@st.composite
def sampled(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    query, events, batches = draw(base)
    return replace(query, sample=draw(st.sampled_from([0.2, 0.5, 0.8]))), events, batches


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=sampled(
        st.one_of(
            with_identities(
                cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 3)), ["closed", "open", "strict"])
            ),
            with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], attributions=True)),
            cases(exclusive_kinds(2, 3), ["closed", "open"], bucket_names=True),
            holding(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], filter_counts=(0, 0, 1))),
            with_exclusions(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"])),
        )
    )
)
def test_sampled_funnels_equal_reference(store: EventStore, case: Any) -> None:
    """Every funnel builder (closed, overlapping, open, strict, exclusions, hold_constant, breakdowns with
    every attribution), raw and stitched, sampled: the SQL equals the oracle, which samples the users it
    folds by its own `siphash64` of their keys (the person's id stitched), counts, ratios, medians and
    intervals alike."""
    query, events, batches = case
    load(store, events, batches)
    sql, reference = both(store, query, events)
    assert sql["meta"] == reference["meta"]
    assert sql["data"] == reference["data"]
    assert sql["sample"] == reference["sample"]
    whole: list[dict[str, Any]] = reference_funnel(replace(query, sample=None), events)["data"]  # type: ignore[assignment]
    entered = sum(row["users"] for row in whole if row["step"] == 1)
    hypothesis.event(f"the sample left users out: {sql['sample']['users_sampled'] < entered}")


def test_an_aggregated_sample_keeps_or_drops_a_group_with_all_its_members(services: Services) -> None:
    """`aggregate_by`: the sample is of groups, by the hash of the group's primary id; a member's events
    count for its sampled groups only, whatever its own key's hash."""
    groups: dict[str, Sequence[str]] = {f"org-{i}": [] for i in range(40)}
    members: dict[str, Sequence[str]] = {f"m-{i}-{j}": [] for i in range(40) for j in range(2)}
    relations = [(f"org-{i}", f"m-{i}-{j}") for i in range(40) for j in range(2)]
    relations += [(f"org-{(i + 1) % 40}", f"m-{i}-0") for i in range(40)]  # each first member in two orgs
    org, memberships = organizations(services, groups, members, relations)
    events = [ev(f"m-{i}-{j}", at(0, 10 * i + j), "page") for i in range(40) for j in range(2)]
    events += [ev(f"m-{i}-1", at(0, 5000 + i), "track", "connect") for i in range(0, 40, 3)]
    load(services.events, events)
    query = replace(funnel_query(STEPS[:2], sample="0.5"), aggregate_by=org)
    body = run(services, query)
    bound = sample_threshold(0.5)
    assert bound is not None
    inside = [g for g in groups if siphash64(g) < bound]
    assert 0 < len(inside) < 40
    assert body["data"][0]["users_sampled"] == len(inside)
    assert body["sample"]["unit"] == "group"
    assert body["data"] == reference_funnel(query, events, memberships)["data"]


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(40))
@given(
    case=grouped(
        sampled(
            st.one_of(
                cases(exclusive_kinds(), ["closed", "open", "strict"]),
                with_identities(cases(exclusive_kinds(2, 3), ["closed", "open"], attributions=True)),
            )
        )
    )
)
def test_sampled_aggregated_funnels_equal_reference(services: Services, case: Any) -> None:
    check_grouped(services, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(25))
@given(
    case=sampled(
        st.one_of(
            cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 3)), ["closed", "open", "strict"]),
            with_identities(cases(exclusive_kinds(2, 3), ["closed", "open"], bucket_names=True)),
        )
    ),
    shards=st.integers(2, 4),
)
def test_a_sampled_funnel_on_shards_equals_one_table(store: EventStore, case: Any, shards: int) -> None:
    """On a cluster (simulated as tests/analytics/test_sql_cluster.py does): raw, each shard samples its own
    user keys in the two-level form; stitched, the Distributed read is filtered by the person's hash with
    the dictionary named by its database. Both equal the one-table answer and the oracle."""
    query, events, batches = case
    cluster_check(store, (replace(query, identity="raw"), events, batches), shards)
    query = replace(query, identity="stitched")
    row = store.query("SELECT currentDatabase()").first()
    assert row is not None
    sql, params = funnel_statement(query, ClusterLayout("sim", str(row[0])))
    assert f"'{row[0]}.{PERSONS_DICTIONARY}'" in sql
    rows = store.query(distributed(sql), params, persons=True).rows
    data = build_response(query, buckets_from_rows(query, rows), {})["data"]
    assert data == run_funnel(store, query)["data"] == reference_funnel(query, events)["data"]
