"""The registry of open database files: one connection, writer and set of readers per file."""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
from pathlib import Path

import duckdb

from adloop.storage._faults import log
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
            try:
                database.release()
            except StorageError as error:  # at exit there is no caller left to tell
                log.error("closing %s: %s", database.path, error)

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
        """Drop one user; the last one commits what is queued and closes the file.

        Raises:
            StorageUnavailableError: queued work could not be written (the file is closed
                all the same, so a restarted process can open it).
        """
        with self._open_lock:
            self.users -= 1
            if self.users > 0 or self._open.get(self.path) is not self:
                return  # still shared, or already closed (e.g. at interpreter exit)
            del self._open[self.path]
        try:
            self.writer.stop()
        finally:
            self._close_readers()
            with contextlib.suppress(duckdb.Error):  # an invalidated database cannot checkpoint
                self.connection.close()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._cursor_lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        # Bumped on every reopen: a reader cursor of an older connection is replaced.
        self._generation = 0
        self.connection = self._connect()
        # Readers get their own connections (cursors) made from this one, never the writer's.
        self._factory = self.connection.cursor()
        self.writer = Writer(self.connection, path.name, reopen=self._reopen, folder=path.parent)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        path = self.path
        try:
            connection = duckdb.connect(str(path))
        except duckdb.IOException as error:
            message = str(error)
            if "lock" in message.lower():
                match = re.search(r"PID (\d+)", message)
                raise StoreLockedError(path, int(match.group(1)) if match else None) from error
            raise StorageError(f"cannot open the database file {path}: {message}") from error
        except duckdb.Error as error:
            raise StorageError(f"cannot open the database file {path}: {error}") from error
        try:
            connection.execute("SET TimeZone = 'UTC'")
            migrate(connection, path)
            check_event_keys(connection)
        except BaseException:
            connection.close()  # release the file lock before reporting
            raise
        return connection

    def _reopen(self) -> duckdb.DuckDBPyConnection:
        """Close every connection to the file and open it again (on the writer's thread).

        DuckDB refuses every statement once it has invalidated a database (e.g. after a
        checkpoint hit a full disk); only a new database instance can use the file again, and
        DuckDB keeps the old instance while any connection to it is open.
        """
        self._close_readers()
        with contextlib.suppress(duckdb.Error):
            self.connection.close()
        connection = self._connect()
        with self._cursor_lock:
            self.connection = connection
            self._factory = connection.cursor()
        return connection

    def _close_readers(self) -> None:
        with self._cursor_lock:
            self._generation += 1
            for cursor in [*self._cursors, self._factory]:
                with contextlib.suppress(duckdb.Error):
                    cursor.close()
            self._cursors.clear()

    def reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's read connection (created on first use, and after a reopen)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or self._local.generation != self._generation:
            with self._cursor_lock:
                cursor = self._factory.cursor()
                cursor.execute("SET TimeZone = 'UTC'")
                self._cursors.append(cursor)
                self._local.generation = self._generation
            self._local.cursor = cursor
        return cursor


# Fire-and-forget writes (decisions) still queued at exit are committed, not dropped.
atexit.register(Database.close_all)
