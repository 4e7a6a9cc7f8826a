"""Shared by the live-database tests: a database per test and a TCP proxy to cut it.

A database is a SQLite file or, when CHURNLENS_TEST_POSTGRES_URL is set, a
fresh PostgreSQL schema (dropped after). `TcpProxy` stands between a server
and PostgreSQL so a test can take the database away and give it back, as an
outage would, without touching the database server others use.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

FULL_KEY, READ_KEY, WRITE_KEY = ("clk_live-full_0123456789", "clk_live-read_0123456789",
                                 "clk_live-write_0123456789")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class ScopedKeys:
    """A key for everything, one that may only read (score), one that may only write (ingest):
    ``entries`` as the server's settings hold them, the others as headers."""

    entries: list[str] = field(default_factory=lambda: [
        _digest(FULL_KEY), f"{_digest(READ_KEY)}:score", f"{_digest(WRITE_KEY)}:ingest"])
    full: dict[str, str] = field(default_factory=lambda: _bearer(FULL_KEY))
    read: dict[str, str] = field(default_factory=lambda: _bearer(READ_KEY))
    write: dict[str, str] = field(default_factory=lambda: _bearer(WRITE_KEY))


SCOPED_KEYS = ScopedKeys()

class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can drop every connection and refuse new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The database goes away: open connections drop, new ones are refused."""
        self._open.clear()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def proxied_url(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


def url_host_port(url: str) -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


class LiveTables:
    """The contract tables of a live database: create them empty, count their rows."""

    @staticmethod
    def create(url: str, *, attributes: dict[str, str] | None = None) -> None:
        create_tables(url, attributes=attributes)

    @staticmethod
    def count(url: str, table: str, **where: Any) -> int:
        return count_rows(url, table, **where)


def create_tables(url: str, *, attributes: dict[str, str] | None = None) -> None:
    """The contract tables, empty, as `churnlens load` creates them."""
    from features.database import contract_schema, database_engine

    engine = database_engine(url)
    try:
        contract_schema(attributes=attributes or {}).metadata.create_all(engine)
    finally:
        engine.dispose()


def count_rows(url: str, table: str, **where: Any) -> int:
    from sqlalchemy import func, select

    from features.database import database_engine, reflect_schema

    engine = database_engine(url)
    try:
        with engine.connect() as connection:
            target = reflect_schema(connection).table(table)
            query = select(func.count()).select_from(target)
            for column, value in where.items():
                query = query.where(target.c[column] == value)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()
