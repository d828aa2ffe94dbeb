"""The registry of open database files: one connection, writer and set of readers per file."""

from __future__ import annotations

import atexit
import re
import threading
from pathlib import Path

import duckdb

from adloop.storage._migrations import check_event_keys, migrate
from adloop.storage._writer import Writer
from adloop.storage.errors import StorageError, StoreLockedError


class Database:
    """One open file per process: the write connection, its writer thread, reader cursors.

    Several :class:`Store` objects on the same file in one process share it, so there is
    always exactly one writer per file (two writers could both accept the same event_id).
    """

    _open: dict[Path, Database] = {}
    _open_lock = threading.Lock()

    @classmethod
    def close_all(cls) -> None:
        """Commit what is queued and close every open file (at interpreter exit)."""
        with cls._open_lock:
            databases = list(cls._open.values())
        for database in databases:
            database.users = 1
            database.release()

    @classmethod
    def acquire(cls, path: Path) -> Database:
        with cls._open_lock:
            database = cls._open.get(path)
            if database is None:
                database = cls(path)
                cls._open[path] = database
            database.users += 1
            return database

    def release(self) -> None:
        with self._open_lock:
            self.users -= 1
            if self.users > 0 or self._open.get(self.path) is not self:
                return  # still shared, or already closed (e.g. at interpreter exit)
            del self._open[self.path]
        self.writer.stop()
        with self._cursor_lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            self._factory.close()
        self.connection.close()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connection = duckdb.connect(str(path))
        except duckdb.IOException as error:
            message = str(error)
            if "lock" in message.lower():
                match = re.search(r"PID (\d+)", message)
                raise StoreLockedError(path, int(match.group(1)) if match else None) from error
            raise StorageError(f"cannot open the database file {path}: {message}") from error
        except duckdb.Error as error:
            raise StorageError(f"cannot open the database file {path}: {error}") from error
        try:
            self.connection.execute("SET TimeZone = 'UTC'")
            migrate(self.connection, path)
            check_event_keys(self.connection)
        except BaseException:
            self.connection.close()  # release the file lock before reporting
            raise
        # Readers get their own connections (cursors) made from this one, never the writer's.
        self._factory = self.connection.cursor()
        self._cursor_lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        self.writer = Writer(self.connection, path.name)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's read connection (created on first use)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursor_lock:
                cursor = self._factory.cursor()
                cursor.execute("SET TimeZone = 'UTC'")
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor


# Fire-and-forget writes (decisions) still queued at exit are committed, not dropped.
atexit.register(Database.close_all)
