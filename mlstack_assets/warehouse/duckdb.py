"""DuckDB: one file, one writer process at a time, so every user of it holds a file lock."""

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import get_dagster_logger
from dagster_duckdb import DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from mlstack_assets.compat.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from mlstack_assets.duckdb_memory import PARQUET_COPY_OPTIONS, limit_memory
from mlstack_assets.processes import pid_alive
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Exported, TableColumns, Warehouse
from mlstack_assets.warehouse.relations import RelationTypeHandler, ReplacingDbIOManager

DEFAULT_LOCK_TIMEOUT_SECONDS = Settings.default("lock_timeout_seconds")
DEFAULT_DUCKDB_MEMORY_LIMIT = Settings.default("duckdb_memory_limit")


class WarehouseLockTimeout(TimeoutError):
    """Another process held the warehouse file longer than `MLSTACK_LOCK_TIMEOUT_SECONDS`."""


def _current_step() -> dict[str, str]:
    """The Dagster run and step this process is executing, when it is executing one."""
    try:
        from dagster import OpExecutionContext

        context = OpExecutionContext.get()
        return {"run_id": context.run_id, "step": context.op.name}
    except Exception:  # outside a step (scripts, tests, sensors): the pid says enough
        return {}


def describe_holder(info: dict[str, Any]) -> str:
    """One line about whoever holds (or last held) a lock file, from what it wrote there."""
    if not info:
        return "an unknown process (it wrote no details: not mlstack, or just starting)"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts.append(f"on {info['host']}")
    if info.get("run_id"):
        parts.append(f"run {str(info['run_id'])[:8]}")
    if info.get("step"):
        parts.append(f"step {info['step']}")
    if info.get("purpose"):
        parts.append(f"({info['purpose']})")
    if info.get("since"):
        held = time.time() - float(info["since"])
        parts.append(f"for {held:.0f} s")
    return " ".join(parts)


class _ProcessFileLock:
    """An exclusive lock on a file, held by one process at a time, re-entrant inside it.

    DuckDB lets one process open a database file for writing; a second writer (or reader)
    fails with "Could not set lock on file". Every step that touches the file holds this
    lock, so concurrent runs queue instead of failing, whatever the Dagster instance.

    Nothing waits forever, or in silence: the holder writes who it is into the lock file
    (pid, Dagster run and step, what for, since when); a waiter polls, logs that it waits
    and for whom (at once, then every `LOG_EVERY_SECONDS`), and raises
    `WarehouseLockTimeout` past its timeout. The kernel drops a killed holder's flock, so a
    stale lock cannot block anyone; the next holder reports that it was left behind.

    Plain `fcntl.flock` rather than `filelock`: filelock truncates the lock file as soon as
    it wins the lock (filelock 3.32, `_finalize_locked_fd`), before its caller can read the
    details a killed holder left there, which is how that holder gets reported.
    """

    POLL_SECONDS = 0.2
    LOG_EVERY_SECONDS = 10.0

    def __init__(self, path: Path):
        self._path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle: Any = None

    @property
    def path(self) -> Path:
        return self._path

    def holder(self) -> dict[str, Any]:
        """What the current (or last) holder wrote into the lock file; {} when nothing."""
        try:
            text = self._path.read_text()
        except OSError:
            return {}
        try:
            info = json.loads(text) if text.strip() else {}
        except ValueError:  # read while the holder was writing it
            return {}
        return info if isinstance(info, dict) else {}

    @contextmanager
    def hold(
        self,
        timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
        purpose: str = "",
        log: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold the lock; wait at most `timeout` seconds for another process to release it."""
        wait = _Wait(timeout, purpose, log or get_dagster_logger().info)
        self._acquire_thread_lock(wait)
        try:
            if self._depth == 0:
                self._acquire_file_lock(wait)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    # an empty file after release: leftover details mean the holder was killed
                    self._handle.seek(0)
                    self._handle.truncate()
                    self._handle.close()  # closing releases the flock
                    self._handle = None
        finally:
            self._thread_lock.release()

    def _acquire_thread_lock(self, wait: "_Wait") -> None:
        # another thread of this process holds the file: wait for it the same bounded way
        while not self._thread_lock.acquire(timeout=self.POLL_SECONDS):
            self._check_wait(wait, "another thread of this process")

    def _acquire_file_lock(self, wait: "_Wait") -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a+")  # not "w": that would erase the holder's details
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass  # held by another process: report (outside this handler) and poll
                self._check_wait(wait, describe_holder(self.holder()))
                time.sleep(self.POLL_SECONDS)
        except BaseException:
            handle.close()
            raise
        left = self.holder()
        if left.get("pid") and left.get("pid") != os.getpid() and not pid_alive(left["pid"]):
            wait.say(
                f"the warehouse lock {self._path} was left by {describe_holder(left)}, which"
                " ended without releasing it (killed?); its lock was dropped by the system"
            )
        waited = time.monotonic() - wait.started
        if wait.logged_at is not None:
            wait.say(f"got the warehouse lock {self._path} after waiting {waited:.1f} s")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **_current_step(),
            "purpose": wait.purpose,
            "since": time.time(),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info))
        handle.flush()
        self._handle = handle

    def _check_wait(self, wait: "_Wait", holder: str) -> None:
        waited = time.monotonic() - wait.started
        doing = f" to {wait.purpose}" if wait.purpose else ""
        if waited >= wait.timeout:
            raise WarehouseLockTimeout(
                f"gave up waiting{doing} for the warehouse {self._path.with_suffix('')}:"
                f" its lock {self._path} is held by {holder}; waited {waited:.0f} s"
                f" (MLSTACK_LOCK_TIMEOUT_SECONDS={wait.timeout:g})"
            )
        if wait.logged_at is None or waited - wait.logged_at >= self.LOG_EVERY_SECONDS:
            wait.logged_at = waited
            wait.say(
                f"waiting{doing} for the warehouse lock {self._path}: held by {holder};"
                f" waited {waited:.0f} s of at most {wait.timeout:g} s"
            )


@dataclass
class _Wait:
    """One `hold()` call's wait: its limit, what it is for, where it reports."""

    timeout: float
    purpose: str
    say: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    logged_at: float | None = None  # seconds into the wait of the last "waiting" message


_FILE_LOCKS: dict[Path, _ProcessFileLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def duckdb_file_lock(database: str | Path) -> _ProcessFileLock:
    path = Path(f"{Path(database).resolve()}.lock")
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, _ProcessFileLock(path))


def limit_memory_on_checkout(engine: Any, memory_limit: str) -> None:
    """`limit_memory` on every connection a SQLAlchemy engine hands out (GX's). On checkout,
    not on connect: a pooled connection made before the hook was added is covered too."""
    import sqlalchemy

    def limit(dbapi_connection: Any, *_: Any) -> None:
        limit_memory(dbapi_connection, memory_limit)

    sqlalchemy.event.listen(engine, "checkout", limit)


class DuckDBWarehouse(Warehouse):
    """A DuckDB file; publishing is one `CREATE OR REPLACE TABLE` transaction."""

    duckdb: DuckDBResource
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT

    @property
    def kind(self) -> str:
        return "duckdb"

    @property
    def path(self) -> str:
        return self.duckdb.database

    @contextmanager
    def session(self, purpose: str = "") -> Iterator[None]:
        with duckdb_file_lock(self.path).hold(self.lock_timeout_seconds, purpose):
            yield

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection to the file, holding its lock; closed whatever happens (dagster-duckdb's
        `get_connection` closes it only when the body succeeds: after a failed statement the
        file stayed open in this process, and the next connection with another
        configuration, e.g. a reader's, was refused)."""
        with self.session():
            conn = self.duckdb.get_connection().__enter__()
            try:
                limit_memory(conn, self.memory_limit)
                yield conn
            finally:
                conn.close()

    def qualified(self, schema: str, table: str) -> str:
        return f'"{schema}"."{table}"'

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(sql, list(parameters)).fetchall()

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        rows = self.query(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            (schema, table),
        )
        return [(name, dtype) for name, dtype in rows] or None

    def drop_staged(self, table: str) -> None:
        with self.connection() as conn:
            conn.execute(f"drop table if exists {self.qualified(self.staging_dataset, table)}")

    def stage_checkpoint(self, table: str, checkpoint: Any) -> None:
        """One `CREATE OR REPLACE TABLE ... AS` from the Parquet file (a `gs://` one is read
        through gcsfs)."""
        from mlstack_assets.ingestion.protocol import sql_string

        staged = self.qualified(self.staging_dataset, table)
        with self.connection() as conn:
            checkpoint.lake.attach(conn)
            conn.execute(f'create schema if not exists "{self.staging_dataset}"')
            conn.execute(
                f"create or replace table {staged} as select * from"
                f" read_parquet({sql_string(checkpoint.data_uri)}, hive_partitioning = false)"
            )

    def export_relation(self, schema: str, table: str, lake: Any, data_key: str) -> Exported:
        import tempfile

        from mlstack_assets.ingestion.protocol import sql_string
        from mlstack_assets.lake import file_sha256

        with tempfile.TemporaryDirectory(prefix="mlstack-export-") as workdir:
            parquet = Path(workdir) / "data.parquet"
            with self.connection() as conn:
                [(rows,)] = conn.execute(
                    f"copy (select * from {self.qualified(schema, table)})"
                    f" to {sql_string(str(parquet))} ({PARQUET_COPY_OPTIONS})"
                ).fetchall()
            sha256 = file_sha256(parquet)
            lake.put_file(parquet, data_key)
        columns = [list(column) for column in self.table_columns(schema, table) or []]
        return Exported(rows=int(rows), columns=columns, sha256=sha256)

    def restore_table(self, table: str, uri: str, lake: Any) -> None:
        """One transaction: readers see the table before or after, never between."""
        from mlstack_assets.ingestion.protocol import sql_string

        self.ensure_dataset(self.dataset)
        with self.connection() as conn:
            lake.attach(conn)
            conn.execute("begin transaction")
            try:
                conn.execute(
                    f"create or replace table {self.qualified(self.dataset, table)} as"
                    f" select * from read_parquet({sql_string(uri)}, hive_partitioning = false)"
                )
                conn.execute("commit")
            except Exception:
                conn.execute("rollback")
                raise

    def sqlalchemy_url(self, schema: str) -> str:
        return f"duckdb:///{self.path}"

    def prepare_sqlalchemy_engine(self, engine: Any) -> None:
        limit_memory_on_checkout(engine, self.memory_limit)

    def ensure_dataset(self, dataset: str) -> None:
        self.query(f'create schema if not exists "{dataset}"')

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        self.ensure_dataset(self.dataset)
        with self.connection() as conn:
            conn.execute("begin transaction")
            try:
                for name, sql in (views or {}).items():
                    conn.execute(
                        f"create or replace view {self.qualified(self.dataset, name)} as {sql}"
                    )
                for table in tables:
                    conn.execute(
                        f"create or replace table {self.qualified(self.dataset, table)} as"
                        f" select * from {self.qualified(source_schema, table)}"
                    )
                conn.execute("commit")
            except Exception:
                conn.execute("rollback")
                raise


class DuckDBRelationTypeHandler(RelationTypeHandler):
    def sql_name(self, table_slice: TableSlice) -> str:
        return f'"{table_slice.schema}"."{table_slice.table}"'

    def execute(self, connection: Any, sql: str) -> list[tuple]:
        return connection.execute(sql).fetchall()

    def columns(self, connection: Any, table_slice: TableSlice) -> list[tuple[str, str]]:
        return connection.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            [table_slice.schema, table_slice.table],
        ).fetchall()


class _LockingDuckDbClient(DuckDbClient):
    """Dagster's DuckDB client, holding the warehouse file lock while connected."""

    def __init__(
        self,
        lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
        memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT,
    ):
        self.lock_timeout_seconds = lock_timeout_seconds
        self.memory_limit = memory_limit

    @contextmanager
    def connect(self, context, table_slice):  # type: ignore[override]
        lock = duckdb_file_lock(context.resource_config["database"])
        purpose = f"store or load {table_slice.schema}.{table_slice.table}"
        with lock.hold(self.lock_timeout_seconds, purpose):
            # dagster-duckdb's `connect` closes its connection only when the body succeeds:
            # after a failed write the file stayed open in this process, and the next step
            # (or reader) could not open it ("different configuration"). Close it always.
            conn = DuckDbClient.connect(context, table_slice).__enter__()
            try:
                limit_memory(conn, self.memory_limit)
                yield conn
            finally:
                conn.close()


class WarehouseDuckDBIOManager(DuckDBPandasIOManager):
    """`DuckDBPandasIOManager` that also materializes `WarehouseQuery` outputs in DuckDB
    (in one statement, see `ReplacingDbIOManager`), and queues on the warehouse file lock
    instead of failing."""

    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    warehouse: DuckDBWarehouse  # publishes `AuditedTable` outputs (the one audited publish)

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DuckDBPandasTypeHandler(), DuckDBRelationTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ReplacingDbIOManager(
            warehouse=self.warehouse,
            db_client=_LockingDuckDbClient(self.lock_timeout_seconds, self.memory_limit),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseDuckDBIOManager",
        )


def build_duckdb_resources(settings: Settings) -> dict[str, Any]:
    database = str(settings.duckdb_path)
    warehouse = DuckDBWarehouse(
        dataset=settings.dataset,
        duckdb=DuckDBResource(database=database),
        lock_timeout_seconds=settings.lock_timeout_seconds,
        memory_limit=settings.duckdb_memory_limit,
    )
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseDuckDBIOManager(
            database=database,
            schema=settings.dataset,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
            warehouse=warehouse,
        ),
    }
