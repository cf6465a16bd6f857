"""One schema, two databases: SQLite (WAL; the embedded default) and MySQL/MariaDB (the HA pair).

SQL is written once with `?` placeholders; the MySQL side translates them. Each thread gets its
own connection. Migrations are numbered and applied in order, each recorded in schema_version.
"""
from __future__ import annotations

import itertools
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import parse_qs, unquote, urlparse

DIALECT = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "text": "TEXT", "name": "VARCHAR(255)"},
    "mysql": {"pk": "BIGINT PRIMARY KEY AUTO_INCREMENT", "text": "MEDIUMTEXT", "name": "VARCHAR(255)"},
}

def _user_bodies_with_roles(tx: "Tx") -> None:
    """Migration 2: every user's JSON body says its role and group (the body is what the API returns)."""
    import json

    for ident, role, group_id, body in tx.execute("SELECT id, role, group_id, body FROM users").all():
        data = json.loads(body)
        data.pop("admin", None)
        data.update(role=role, group_id=group_id)
        tx.execute("UPDATE users SET body = ? WHERE id = ?", (json.dumps(data, separators=(",", ":"),
                                                                          sort_keys=True), ident))


# A step is SQL (with {pk}, {text}, {name} for the dialect) or a function of the transaction.
MIGRATIONS: list[tuple[int, list[Any]]] = [
    (1, [
        "CREATE TABLE users (id {pk}, name {name} NOT NULL UNIQUE, token_hash CHAR(64) NOT NULL UNIQUE, "
        "admin INTEGER NOT NULL, body {text} NOT NULL)",
        "CREATE TABLE clusters (id {pk}, name {name} NOT NULL UNIQUE, body {text} NOT NULL)",
        "CREATE TABLE hosts (id {pk}, name {name} NOT NULL UNIQUE, state VARCHAR(16) NOT NULL, "
        "cluster_id BIGINT, body {text} NOT NULL)",
        "CREATE TABLE datastores (id {pk}, name {name} NOT NULL UNIQUE, kind VARCHAR(16) NOT NULL, "
        "body {text} NOT NULL)",
        "CREATE TABLE images (id {pk}, name {name} NOT NULL UNIQUE, datastore_id BIGINT NOT NULL, "
        "state VARCHAR(16) NOT NULL, body {text} NOT NULL)",
        "CREATE TABLE vnets (id {pk}, name {name} NOT NULL UNIQUE, body {text} NOT NULL)",
        "CREATE TABLE leases (vnet_id BIGINT NOT NULL, ip VARCHAR(15) NOT NULL, vm_id BIGINT NOT NULL, "
        "PRIMARY KEY (vnet_id, ip))",
        "CREATE TABLE vms (id {pk}, name {name} NOT NULL, owner_id BIGINT NOT NULL, state VARCHAR(16) NOT NULL, "
        "host_id BIGINT, datastore_id BIGINT, version BIGINT NOT NULL, cpu INTEGER NOT NULL, "
        "memory INTEGER NOT NULL, disk_mb BIGINT NOT NULL, body {text} NOT NULL)",
        "CREATE INDEX vms_state ON vms (state)",
        "CREATE INDEX vms_host ON vms (host_id)",
        "CREATE TABLE vm_history (id {pk}, vm_id BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, "
        "from_state VARCHAR(16) NOT NULL, to_state VARCHAR(16) NOT NULL, reason {text} NOT NULL)",
        "CREATE INDEX vm_history_vm ON vm_history (vm_id)",
    ]),
    # Authorization and audit: users get a role and a group, tokens become named rows with an
    # expiry (the users' one token each moves there as "initial"), images and VMs an owner's group.
    (2, [
        "CREATE TABLE user_groups (id {pk}, name {name} NOT NULL UNIQUE, body {text} NOT NULL)",
        "CREATE TABLE tokens (id {pk}, user_id BIGINT NOT NULL, name {name} NOT NULL, "
        "token_hash CHAR(64) NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, "
        "revoked_at DOUBLE PRECISION, last_used_at DOUBLE PRECISION)",
        "CREATE INDEX tokens_user ON tokens (user_id)",
        "INSERT INTO tokens (user_id, name, token_hash, created_at) SELECT id, 'initial', token_hash, 0 FROM users",
        "CREATE TABLE users_v2 (id {pk}, name {name} NOT NULL UNIQUE, role VARCHAR(16) NOT NULL, "
        "group_id BIGINT NOT NULL, body {text} NOT NULL)",
        "INSERT INTO users_v2 (id, name, role, group_id, body) "
        "SELECT id, name, CASE WHEN admin = 1 THEN 'admin' ELSE 'user' END, 0, body FROM users",
        "DROP TABLE users",
        "ALTER TABLE users_v2 RENAME TO users",
        "ALTER TABLE images ADD COLUMN owner_id BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE images ADD COLUMN group_id BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE images ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE images ADD COLUMN public INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE vms ADD COLUMN group_id BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE vms ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX vms_owner ON vms (owner_id)",
        "CREATE INDEX images_owner ON images (owner_id)",
        "CREATE INDEX leases_vm ON leases (vm_id)",  # a VM's release must not lock the whole table
        "CREATE TABLE audit (id {pk}, at DOUBLE PRECISION NOT NULL, user_id BIGINT, user_name {name} NOT NULL, "
        "method VARCHAR(8) NOT NULL, path VARCHAR(512) NOT NULL, operation VARCHAR(64) NOT NULL, "
        "entity VARCHAR(16) NOT NULL, entity_id BIGINT, status INTEGER NOT NULL, code VARCHAR(32) NOT NULL)",
        "CREATE INDEX audit_at ON audit (at)",
        _user_bodies_with_roles,
    ]),
    # Push monitoring (core/collector.py): compact samples, each agent's replay state and liveness,
    # and the last state each host's agent saw of each VM.
    (3, [
        "CREATE TABLE mon_vm (vm_id BIGINT NOT NULL, host_id BIGINT NOT NULL, at BIGINT NOT NULL, "
        "cpu INTEGER NOT NULL, mem_kb BIGINT NOT NULL, net_rx BIGINT NOT NULL, net_tx BIGINT NOT NULL, "
        "span INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX mon_vm_at ON mon_vm (vm_id, at)",
        "CREATE TABLE mon_host (host_id BIGINT NOT NULL, at BIGINT NOT NULL, cpu INTEGER NOT NULL, "
        "mem_mb BIGINT NOT NULL, domains INTEGER NOT NULL, span INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX mon_host_at ON mon_host (host_id, at)",
        "CREATE TABLE mon_agents (host_id BIGINT PRIMARY KEY, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, "
        "seen_at DOUBLE PRECISION NOT NULL, snapshot BIGINT NOT NULL, states_at DOUBLE PRECISION NOT NULL, "
        "cpu_units BIGINT NOT NULL, memory_mb BIGINT NOT NULL, hypervisor VARCHAR(16) NOT NULL)",
        # keyed by host too: what one host says of a VM never overwrites what the VM's own host said
        "CREATE TABLE mon_vm_state (host_id BIGINT NOT NULL, vm_id BIGINT NOT NULL, state VARCHAR(8) NOT NULL, "
        "epoch BIGINT NOT NULL, snapshot BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (host_id, vm_id))",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class Database:
    """A thread-safe handle: one connection per thread, transactions as context managers."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._all.append(conn)
        return conn

    def sql(self, statement: str) -> str:
        return statement

    def transient(self, exc: BaseException) -> bool:
        """True for a failure that says nothing of the request: a deadlock, a lock wait, a lost
        connection. The work is idempotent and runs again."""
        return False

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator["Tx"]:
        """readonly: a consistent snapshot that never waits for, or blocks, a writer."""
        raise NotImplementedError
        yield  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except Exception:  # closing a connection another thread owns can fail: it is going anyway
                    pass
            self._all.clear()
        self._local = threading.local()


class Tx:
    """The cursor of one transaction."""

    def __init__(self, db: Database, cursor: Any):
        self.db = db
        self.cursor = cursor

    def execute(self, statement: str, params: Sequence[Any] = ()) -> "Tx":
        self.cursor.execute(self.db.sql(statement), tuple(params))
        return self

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> "Tx":
        self.cursor.executemany(self.db.sql(statement), rows if isinstance(rows, list) else list(rows))
        return self

    def insert_ints(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[int]], chunk: int = 5000) -> int:
        """Bulk insert of integer-only rows from an iterator (consumed once, never held as a list):
        SQLite's executemany; on MySQL, multi-row INSERTs built with %d, which formats numbers only
        (a string raises TypeError), so no value needs quoting. PyMySQL's executemany re-parses and
        escapes every value in Python, five times slower. Returns the rows inserted."""
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        if self.db.dialect == "sqlite":
            before = self.cursor.connection.total_changes
            self.cursor.executemany(head + "(" + ", ".join("?" * len(columns)) + ")", rows)
            return self.cursor.connection.total_changes - before
        shape = "(" + ",".join(["%d"] * len(columns)) + ")"
        done = 0
        iterator = iter(rows)
        while True:
            values = [shape % row for row in itertools.islice(iterator, chunk)]
            if not values:
                return done
            self.cursor.execute(head + ",".join(values))
            done += len(values)

    def all(self) -> list[tuple]:
        return list(self.cursor.fetchall())

    def one(self) -> tuple | None:
        return self.cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    @property
    def lastrowid(self) -> int:
        return int(self.cursor.lastrowid)


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Tx]:
        conn = self._connection()
        cursor = conn.cursor()
        # Writers take the write lock up front (no upgrade deadlocks); readers take a WAL snapshot.
        cursor.execute("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")
        try:
            yield Tx(self, cursor)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class MysqlDatabase(Database):
    dialect = "mysql"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 3306, user: str, password: str, database: str,
                 unix_socket: str | None = None):
        super().__init__()
        self.params = dict(host=host, port=port, user=user, password=password, database=database,
                           unix_socket=unix_socket)

    def _connect(self) -> Any:
        import pymysql

        return pymysql.connect(**{k: v for k, v in self.params.items() if v is not None}, autocommit=False,
                               charset="utf8mb4", connect_timeout=10)

    def sql(self, statement: str) -> str:
        return statement.replace("%", "%%").replace("?", "%s")

    # deadlock, lock wait timeout, server gone, connection lost, read-only (a passive node)
    TRANSIENT = {1205, 1213, 2003, 2006, 2013, 1290}

    def transient(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.InterfaceError) or (
            isinstance(exc, pymysql.err.OperationalError) and bool(exc.args) and exc.args[0] in self.TRANSIENT)

    IDLE_CHECK = 5.0  # seconds idle after which a connection is checked before use

    def _live_connection(self) -> Any:
        """This thread's connection; after a failover the VIP may point at a new server, so a
        connection idle for a while is pinged and replaced when the server is gone."""
        import time

        import pymysql

        conn = self._connection()
        now = time.monotonic()
        if now - getattr(self._local, "used", now) > self.IDLE_CHECK:
            try:
                conn.ping(False)
            except pymysql.err.Error:
                self._discard(conn)
                conn = self._connection()
        self._local.used = now
        return conn

    def _discard(self, conn: Any) -> None:
        """Forget this thread's connection; the next transaction opens a new one."""
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        self._local.conn = None
        try:
            conn.close()
        except Exception:  # noqa: BLE001 (it is already broken; closing is a courtesy)
            pass

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Tx]:
        import pymysql

        conn = self._live_connection()
        cursor = conn.cursor()
        try:
            yield Tx(self, cursor)
            conn.commit()
        except BaseException as exc:
            # A server that restarted (crash, failover behind the VIP) leaves this connection dead:
            # busy threads never sit idle long enough for the ping above, so drop it here, or every
            # later request on this thread fails too (the kill-db drill showed it).
            gone = isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InterfaceError))
            try:
                conn.rollback()
            except pymysql.err.Error:
                gone = True
            if gone:
                self._discard(conn)
            raise


@dataclass(frozen=True)
class DatabaseUrl:
    kind: str
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = ""
    password: str = ""
    name: str = ""
    unix_socket: str | None = None


def parse_url(url: str) -> DatabaseUrl:
    """sqlite:///abs/path.db or mysql://user:password@host:port/name[?unix_socket=/run/mysqld.sock]."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        if not parsed.path:
            raise ValueError("a sqlite URL needs a path: sqlite:///var/lib/appliance/manager.db")
        return DatabaseUrl("sqlite", path=parsed.path)
    if parsed.scheme == "mysql":
        query = parse_qs(parsed.query)
        return DatabaseUrl("mysql", host=parsed.hostname or "127.0.0.1", port=parsed.port or 3306,
                           user=unquote(parsed.username or ""), password=unquote(parsed.password or ""),
                           name=parsed.path.lstrip("/"), unix_socket=(query.get("unix_socket") or [None])[0])
    raise ValueError(f"database URL scheme {parsed.scheme!r} is not sqlite or mysql")


def open_database(url: DatabaseUrl) -> Database:
    if url.kind == "sqlite":
        return SqliteDatabase(url.path)
    return MysqlDatabase(host=url.host, port=url.port, user=url.user, password=url.password, database=url.name,
                         unix_socket=url.unix_socket)


# MySQL commits each DDL statement on its own, so a manager killed during a migration (Pacemaker's
# start timeout, a fence) leaves some of its steps done. Every step is recorded in schema_steps in
# its own transaction; a DDL step that ran but was not recorded is known on the rerun by the error
# its repetition raises (table exists, duplicate column or key, no such table), and counts as done.
_DDL_ALREADY_DONE = {1050, 1051, 1060, 1061, 1091, 1146}


def migrate(db: Database, after_step: Callable[[int, int], None] | None = None) -> int:
    """Bring the schema to SCHEMA_VERSION. Idempotent, and resumable after a crash at any step;
    returns the number of migrations applied. `after_step(version, index)`: tests crash there, after
    the step ran and before it is recorded."""
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        tx.execute("CREATE TABLE IF NOT EXISTS schema_steps (version INTEGER NOT NULL, step INTEGER NOT NULL)")
        row = tx.execute("SELECT MAX(version) FROM schema_version").one()
        done = {(r[0], r[1]) for r in tx.execute("SELECT version, step FROM schema_steps").all()}
    current = row[0] if row and row[0] is not None else 0
    applied = 0
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        if db.dialect == "sqlite":  # SQLite's DDL is transactional: the whole migration or none of it
            with db.transaction() as tx:
                for index, statement in enumerate(statements):
                    _step(db, tx, statement)
                    if after_step:
                        after_step(version, index)
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        else:
            # Only the step after the last one recorded can have run unrecorded.
            resumed = max((i for v, i in done if v == version), default=-1) + 1
            for index, statement in enumerate(statements):
                if (version, index) in done:
                    continue
                with db.transaction() as tx:
                    _step(db, tx, statement, rerun_ok=index == resumed)
                    if after_step:  # the worst moment: a DDL step is committed, its record is not
                        after_step(version, index)
                    tx.execute("INSERT INTO schema_steps (version, step) VALUES (?, ?)", (version, index))
            with db.transaction() as tx:
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        applied += 1
    return applied


def _step(db: Database, tx: Tx, statement: Any, rerun_ok: bool = False) -> None:
    if callable(statement):
        statement(tx)
        return
    sql = statement.format(**DIALECT[db.dialect])
    try:
        tx.execute(sql)
    except Exception as exc:  # noqa: BLE001 (only MySQL's "already done" errors are swallowed)
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if not (rerun_ok and code in _DDL_ALREADY_DONE and sql.split()[0].upper() in ("CREATE", "ALTER", "DROP")):
            raise
