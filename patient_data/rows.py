"""Rows read by fixed statements of our own instead of the ORM's ``get``.

Every request, socket command and cleanup reads its session row and its user row. The ORM
builds and compiles the query of each ``get`` anew, most of the read's CPU in the client
(``patient_data.sessions.db.RowRead`` for the session row). Here the user row: one ``SELECT``
built once per database vendor, the values converted as the ORM's compiler converts them.
(Django's auth models are imported at first use: the session engines import this module.)
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import QuerySet
from django.db.models.manager import BaseManager
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string


def converted(connection: Any, columns: list[Any], row: tuple) -> list[Any]:
    """A row's values as the ORM's compiler hands them to ``from_db``: the backend's
    converters, then each field's."""
    values = []
    for value, column in zip(row, columns, strict=True):
        for convert in connection.ops.get_db_converters(column) + column.get_db_converters(
            connection
        ):
            value = convert(value, column, connection)
        values.append(value)
    return values


class _UserRead:
    """``SELECT`` of every column of ``auth.User`` by its primary key, as the ORM's
    ``get(pk=...)`` selects them (same columns, same order), for one database vendor."""

    def __init__(self, connection: Any) -> None:
        from django.contrib.auth.models import User

        self.model = User
        meta = User._meta
        fields = list(meta.concrete_fields)
        quote = connection.ops.quote_name
        selected = ", ".join(quote(field.column) for field in fields)
        self.sql = (
            f"SELECT {selected} FROM {quote(meta.db_table)} "  # noqa: S608 - model names, values bound
            f"WHERE {quote(meta.pk.column)} = %s"
        )
        self.attnames = [field.attname for field in fields]
        self.columns = [field.get_col(meta.db_table) for field in fields]
        self.bounds = connection.ops.integer_field_range(meta.pk.get_internal_type())

    def user(self, connection: Any, raw_id: Any) -> Any:
        """The active user ``raw_id`` names (as the session holds it), else None: what
        ``ModelBackend.get_user`` answers. None of the ORM's per-call work."""
        pk = self.model._meta.pk
        user_id = pk.to_python(raw_id)
        low, high = self.bounds
        if not (low is None or low <= user_id) or not (high is None or user_id <= high):
            raise OverflowError  # the ORM answers "no such row" without a query: its call
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [pk.get_db_prep_value(user_id, connection)])
            row = cursor.fetchone()
        if row is None:
            return None
        values = converted(connection, self.columns, row)
        user = self.model.from_db(DEFAULT_DB_ALIAS, self.attnames, values)
        return user if user.is_active else None


@cache
def _standard_backends() -> frozenset[str]:
    """The configured backends whose user load is ``ModelBackend``'s own on Django's user
    model, with its plain manager: those the fixed statement answers for."""
    from django.contrib.auth.backends import ModelBackend
    from django.contrib.auth.models import User

    manager = User._default_manager
    if auth.get_user_model() is not User or not (
        type(manager).get_queryset is BaseManager.get_queryset
        and manager._queryset_class is QuerySet
    ):
        return frozenset()
    standard = set()
    for path in settings.AUTHENTICATION_BACKENDS:
        try:
            backend = import_string(path)
        except ImportError:
            continue  # Django's own call says it
        if isinstance(backend, type) and issubclass(backend, ModelBackend):
            if (backend.get_user, backend.user_can_authenticate) == (
                ModelBackend.get_user,
                ModelBackend.user_can_authenticate,
            ):
                standard.add(path)
    return frozenset(standard)


@cache
def _user_read(vendor: str) -> _UserRead:
    return _UserRead(connections[DEFAULT_DB_ALIAS])


def verified_user(request: Any) -> Any:
    """``django.contrib.auth.get_user(request)``: the same user (or ``AnonymousUser``), the
    session hash verified the same way, with the same session changes (a flush when it does
    not verify, a key cycle for a fallback secret); the user row read by one fixed statement.

    Anything else is Django's own call: a custom user model or manager, a backend with a user
    load of its own, users read from another database, an error (Django's call then raises
    it, or answers, as it would have)."""
    from django.contrib.auth.models import AnonymousUser

    session = request.session
    try:
        raw_id = session[SESSION_KEY]
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in _standard_backends():
        return auth.get_user(request)
    connection = connections[DEFAULT_DB_ALIAS]
    read = _user_read(connection.vendor)
    if router.db_for_read(read.model) != DEFAULT_DB_ALIAS:
        return auth.get_user(request)
    try:
        user = read.user(connection, raw_id)
    except Exception:  # noqa: BLE001 - Django's own call raises it, or answers
        return auth.get_user(request)
    if user is None:
        return AnonymousUser()
    # django.contrib.auth.get_user's verification of the session hash, as it is.
    session_hash = session.get(HASH_SESSION_KEY)
    if session_hash:
        session_auth_hash = user.get_session_auth_hash()
        if constant_time_compare(session_hash, session_auth_hash):
            return user
        if any(
            constant_time_compare(session_hash, fallback_hash)
            for fallback_hash in user.get_session_auth_fallback_hash()
        ):
            session.cycle_key()
            session[HASH_SESSION_KEY] = session_auth_hash
            return user
    session.flush()
    return AnonymousUser()


def _forget(**kwargs: Any) -> None:
    # Any setting: the backends, the user model, the databases.
    _standard_backends.cache_clear()
    _user_read.cache_clear()


setting_changed.connect(_forget, dispatch_uid="patient_data.rows")
