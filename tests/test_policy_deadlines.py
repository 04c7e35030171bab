"""``policy.deadlines``: the moments ``judge`` will act, so sockets and HTTP never disagree."""

from __future__ import annotations

import pytest

from patient_data import policy
from patient_data.conf import conf

NOW = 1_000_000.0


def _facts(now: float, *, seen=NOW, since=NOW, data=True, auth=True) -> policy.Facts:
    meta = {key: value for key, value in (("seen", seen), ("since", since)) if value is not None}
    return policy.Facts(now=now, meta=meta, has_patient_data=data, claims_auth=auth)


CASES = [
    {},
    {"since": NOW - conf.PATIENT_SESSION_MAX_AGE * 60 + 100},
    {"data": False},
    {"data": False, "since": None},
    {"auth": False},
    {"seen": NOW - 600, "since": NOW - 700},
]


@pytest.mark.parametrize("case", CASES)
def test_judge_keeps_until_the_next_deadline_and_acts_on_it(case):
    deadline = policy.next_deadline(_facts(NOW, **case))
    assert deadline is not None
    assert policy.judge(_facts(deadline.at - 0.01, **case)) == policy.KEEP_VERDICT
    assert policy.judge(_facts(deadline.at, **case)) == deadline.verdict


def test_the_idle_timeout_comes_first_with_patient_data():
    deadline = policy.next_deadline(_facts(NOW))
    assert deadline == policy.Deadline(NOW + conf.PATIENT_SESSION_TIMEOUT * 60, policy.CLEAR_IDLE)


def test_without_patient_data_only_the_session_end_is_due():
    [deadline] = policy.deadlines(_facts(NOW, data=False))
    assert deadline.verdict == policy.END_MAX_INACTIVE


def test_nothing_is_due_for_an_anonymous_session_without_data_or_activity():
    assert policy.next_deadline(_facts(NOW, seen=None, since=None, data=False, auth=False)) is None
    assert policy.next_deadline(_facts(NOW, data=False, auth=False)) is None
