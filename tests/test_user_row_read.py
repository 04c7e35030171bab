"""The user row read by one fixed statement (``patient_data.rows.verified_user``): the same
answer as ``django.contrib.auth.get_user``, with the same session changes, else Django's own
call."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import AsyncClient, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patient_data import rows

pytestmark = pytest.mark.django_db(transaction=True)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
AXES_BACKEND = "axes.backends.AxesBackend"
OLD_SECRET = "an-older-secret-key-of-the-tests-0123456789abcdefghijklmnopqrstu"


class OwnLoad(ModelBackend):
    """A backend with a user load of its own."""

    def get_user(self, user_id):
        return super().get_user(user_id)


class UsersElsewhere:
    def db_for_read(self, model, **hints):
        return "users" if model._meta.app_label == "auth" else None


class _Request:
    def __init__(self, session: SessionStore) -> None:
        self.session = session


@pytest.fixture
def user() -> User:
    user = User.objects.create_user(
        "reader", "reader@example.org", "pw", first_name="Ré", last_name="Ader", is_staff=True
    )
    user.last_login = timezone.now() - dt.timedelta(minutes=5)
    user.save()
    return user


def _session(user: User, backend: str = MODEL_BACKEND, **changes) -> dict:
    data = {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: backend,
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }
    return {**data, **changes}


def _both(data: dict) -> tuple[tuple, tuple]:
    """(user, session after) of ours and of Django's, each on its own copy of ``data``."""
    answers = []
    for read in (rows.verified_user, auth.get_user):
        session = SessionStore()
        session.update(data)
        answers.append((read(_Request(session)), dict(session), session.session_key))
    return answers[0], answers[1]


def _same_user(ours, django) -> None:
    assert type(ours) is type(django)
    if isinstance(django, AnonymousUser):
        return
    mine = {name: value for name, value in vars(ours).items() if name != "_state"}
    theirs = {name: value for name, value in vars(django).items() if name != "_state"}
    assert mine == theirs
    assert [type(value) for value in mine.values()] == [type(value) for value in theirs.values()]
    assert (ours._state.db, ours._state.adding) == (django._state.db, django._state.adding)


@pytest.mark.parametrize("backend", [MODEL_BACKEND, AXES_BACKEND])
def test_the_same_user_as_django_s_get_user(user, backend):
    (ours, ours_after, _), (django, django_after, _) = _both(_session(user, backend))
    assert ours.pk == user.pk
    _same_user(ours, django)
    assert ours.last_login == user.last_login
    assert timezone.is_aware(ours.date_joined)
    assert ours_after == django_after == _session(user, backend)


def test_one_fixed_statement_for_every_user(user):
    other = User.objects.create_user("other", password="pw")
    statements = []
    for someone in (user, other):
        session = SessionStore()
        session.update(_session(someone))
        with CaptureQueriesContext(connection) as queries:
            assert rows.verified_user(_Request(session)).pk == someone.pk
        assert len(queries) == 1
        statements.append(queries[0]["sql"].replace(str(someone.pk), "<pk>"))
    assert statements[0] == statements[1]
    assert "auth_user" in statements[0]


def test_an_inactive_user_is_anonymous_as_with_django(user):
    user.is_active = False
    user.save()
    (ours, ours_after, _), (django, django_after, _) = _both(_session(user))
    assert isinstance(ours, AnonymousUser)
    _same_user(ours, django)
    assert ours_after == django_after


def test_a_deleted_user_is_anonymous_and_the_session_stays_as_with_django(user):
    data = _session(user)
    user.delete()
    (ours, ours_after, _), (django, django_after, _) = _both(data)
    assert isinstance(ours, AnonymousUser)
    _same_user(ours, django)
    assert ours_after == django_after == data


@pytest.mark.parametrize("stale_hash", ["not-the-hash", "", None])
def test_a_hash_that_does_not_verify_flushes_the_session_as_with_django(user, stale_hash):
    data = _session(user, **{HASH_SESSION_KEY: stale_hash})
    (ours, ours_after, ours_key), (django, django_after, django_key) = _both(data)
    assert isinstance(ours, AnonymousUser)
    _same_user(ours, django)
    assert ours_after == django_after == {}
    assert ours_key is django_key is None


def test_a_hash_of_a_fallback_secret_cycles_the_key_as_with_django(user, settings):
    settings.SECRET_KEY_FALLBACKS = [OLD_SECRET]
    with override_settings(SECRET_KEY=OLD_SECRET, SECRET_KEY_FALLBACKS=[]):
        old_hash = user.get_session_auth_hash()
    data = _session(user, **{HASH_SESSION_KEY: old_hash})
    (ours, ours_after, ours_key), (django, django_after, django_key) = _both(data)
    assert ours.pk == user.pk
    _same_user(ours, django)
    assert ours_after == django_after == _session(user)  # the current hash now
    assert ours_key is not None and django_key is not None


def test_no_login_and_an_unknown_backend_are_anonymous(user):
    for data in ({}, {SESSION_KEY: str(user.pk)}, _session(user, "some.other.Backend")):
        (ours, ours_after, _), (django, django_after, _) = _both(data)
        assert isinstance(ours, AnonymousUser)
        assert isinstance(django, AnonymousUser)
        assert ours_after == django_after == data


def test_an_id_out_of_the_column_s_range_is_anonymous_as_with_django(user):
    (ours, _, _), (django, _, _) = _both(_session(user, **{SESSION_KEY: str(2**70)}))
    assert isinstance(ours, AnonymousUser)
    _same_user(ours, django)


def test_an_id_that_is_no_number_raises_as_django_does(user):
    session = SessionStore()
    session.update(_session(user, **{SESSION_KEY: "not-a-number"}))
    with pytest.raises(ValidationError):
        auth.get_user(_Request(session))
    with pytest.raises(ValidationError):
        rows.verified_user(_Request(session))


@pytest.fixture
def djangos_own(monkeypatch) -> list:
    """The requests ``verified_user`` hands to Django's own ``get_user``."""
    handed: list = []
    get_user = auth.get_user

    def recorded(request):
        handed.append(request)
        return get_user(request)

    monkeypatch.setattr(auth, "get_user", recorded)
    return handed


def test_the_standard_case_is_not_django_s_call(user, djangos_own):
    session = SessionStore()
    session.update(_session(user))
    assert rows.verified_user(_Request(session)).pk == user.pk
    assert djangos_own == []


def test_a_backend_with_its_own_user_load_gets_django_s_call(user, djangos_own, settings):
    path = f"{__name__}.OwnLoad"
    settings.AUTHENTICATION_BACKENDS = [path, MODEL_BACKEND]
    session = SessionStore()
    session.update(_session(user, path))
    assert rows.verified_user(_Request(session)).pk == user.pk
    assert len(djangos_own) == 1
    session.update(_session(user))  # ModelBackend's own load: ours again
    assert rows.verified_user(_Request(session)).pk == user.pk
    assert len(djangos_own) == 1


def test_users_read_from_another_database_get_django_s_call(user, djangos_own, settings):
    settings.DATABASE_ROUTERS = [f"{__name__}.UsersElsewhere"]
    session = SessionStore()
    session.update(_session(user))
    with pytest.raises(Exception, match="users"):  # no such database here: Django's call says so
        rows.verified_user(_Request(session))
    assert len(djangos_own) == 1


def test_a_custom_user_manager_gets_django_s_call(user, djangos_own, monkeypatch):
    class Filtered(User._default_manager._queryset_class):
        pass

    monkeypatch.setattr(User._default_manager, "_queryset_class", Filtered)
    rows._forget()
    try:
        session = SessionStore()
        session.update(_session(user))
        assert rows.verified_user(_Request(session)).pk == user.pk
        assert len(djangos_own) == 1
    finally:
        monkeypatch.undo()
        rows._forget()


def test_a_database_error_gets_django_s_call(user, djangos_own, monkeypatch):
    def broken(self, connection, raw_id):
        raise RuntimeError("the fixed statement failed")

    monkeypatch.setattr(rows._UserRead, "user", broken)
    session = SessionStore()
    session.update(_session(user))
    assert rows.verified_user(_Request(session)).pk == user.pk
    assert len(djangos_own) == 1


@pytest.fixture
def fixed_reads(monkeypatch) -> list:
    """The user ids read by the fixed statement."""
    read: list = []
    original = rows._UserRead.user

    def counted(self, connection, raw_id):
        read.append(raw_id)
        return original(self, connection, raw_id)

    monkeypatch.setattr(rows._UserRead, "user", counted)
    return read


def test_a_sync_request_and_a_socket_read_the_user_by_the_fixed_statement(
    user, fixed_reads, client
):
    """The authentication middleware's load (``request.user``) and a socket's check."""
    from monitor.sessions import Identity, SessionTarget

    client.force_login(user)
    assert client.get("/_test/store/").status_code == 200
    assert fixed_reads == [str(user.pk)]
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert SessionTarget(key)._open(Identity(user=user, session_key=key))
    assert fixed_reads == [str(user.pk)] * 2


async def test_an_async_request_reads_the_user_in_the_session_s_hop_by_it(user, fixed_reads):
    client = AsyncClient()
    await client.aforce_login(user)
    assert (await client.get("/_test/store/")).status_code == 200
    assert fixed_reads == [str(user.pk)]
