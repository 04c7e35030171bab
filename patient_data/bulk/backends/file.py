"""``file`` sessions: one file per session under SESSION_FILE_PATH.

A change is written like Django does (temporary file + atomic rename) after re-reading the
file, and keeps the file's modification time: for file sessions the expiry is derived from it.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterator

from django.conf import settings
from django.contrib.sessions.backends.base import VALID_KEY_CHARS

from patient_data.batches import batched
from patient_data.bulk.backends.base import Backend, Stored


class FileBackend(Backend):
    name = "file"

    def __init__(self, engine: str, store_class: type) -> None:
        super().__init__(engine, store_class)
        self.path = store_class._get_storage_path()
        self.file_prefix = settings.SESSION_COOKIE_NAME

    def describe(self) -> str:
        return f"{super().describe()}, directory {self.path}"

    def _keys(self) -> Iterator[str]:
        with os.scandir(self.path) as entries:
            for entry in entries:
                key = entry.name.removeprefix(self.file_prefix)
                # Django's temporary files carry "_out_", outside the key alphabet.
                if key != entry.name and key and set(key) <= set(VALID_KEY_CHARS):
                    yield key

    def _file(self, key: str) -> str:
        return os.path.join(self.path, self.file_prefix + key)

    def _read(self, key: str) -> Stored | None:
        try:
            with open(self._file(key), encoding="ascii") as handle:
                raw = handle.read()
                mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return Stored(key, None)
        return Stored(key, raw, mtime_ns=mtime_ns)

    def count(self) -> int:
        return sum(1 for _ in self._keys())

    def pages(self, size: int) -> Iterator[list[Stored]]:
        readable = (stored for stored in map(self._read, self._keys()) if stored is not None)
        yield from batched(readable, size)

    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        found = {key: self._read(key) for key in keys}
        return {key: stored for key, stored in found.items() if stored is not None}

    def expired(self, stored: Stored, data: dict, now: datetime.datetime) -> bool:
        modified = datetime.datetime.fromtimestamp(stored.mtime_ns / 1e9, tz=datetime.UTC)
        expiry = data.get("_session_expiry")
        if isinstance(expiry, str):
            expires = datetime.datetime.fromisoformat(expiry)
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=datetime.UTC)
        else:
            seconds = expiry if isinstance(expiry, int) else settings.SESSION_COOKIE_AGE
            expires = modified + datetime.timedelta(seconds=seconds)
        return expires <= now

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        conflicts = set()
        for stored, data in updates:
            current = self._read(stored.key)
            if current is None or current.raw != stored.raw:
                conflicts.add(stored.key)
                continue
            self._replace(stored, self.encode(data))
        for stored in deletes:
            current = self._read(stored.key)
            if current is None or current.raw != stored.raw:
                conflicts.add(stored.key)
                continue
            os.unlink(self._file(stored.key))
        return conflicts

    def _replace(self, stored: Stored, content: str) -> None:
        target = self._file(stored.key)
        prefix = os.path.basename(target) + "_out_"
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=prefix)
        try:
            with os.fdopen(handle, "w", encoding="ascii") as output:
                output.write(content)
            os.utime(temporary, ns=(stored.mtime_ns, stored.mtime_ns))
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
