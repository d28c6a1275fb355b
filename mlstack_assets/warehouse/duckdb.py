"""DuckDB: one file, one writer process at a time, so every user of it (runs, `mlstack rollback`,
the IO manager) holds `<file>.lock` first and queues; the kernel drops a killed holder's lock.
The holder writes there who it is; a waiter says whom it waits for, every `LOG_EVERY_SECONDS`."""

import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from dagster import IOManager, OpExecutionContext, get_dagster_logger
from dagster_duckdb import DuckDBResource
from dagster_duckdb_pandas import DuckDBPandasIOManager

from mlstack_assets.lake import file_sha256
from mlstack_assets.processes import fail_orphaned_runs, pid_alive
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Exported, Hook, TableColumns, Views, Warehouse
from mlstack_assets.warehouse.dialect import sql_identifier, sql_string

# DuckDB's Parquet writer holds a row group in memory: 122,880 rows by default ran a 600,000-row
# extract out of 128MB; 16,384 keep it a few MB, and readers split work by row group as fast.
PARQUET_COPY_OPTIONS = "format parquet, row_group_size 16384"
LOCK_TIMEOUT_SECONDS = 900.0
Say = Callable[[str], None]


class WarehouseLockTimeout(TimeoutError):
    """Another process held the warehouse file longer than `MLSTACK_LOCK_TIMEOUT_SECONDS`."""


def limit_memory(conn: Any, memory_limit: str) -> None:
    """By a SET, not a connect option, which would refuse GX's connection (another config)."""
    conn.execute(f"set memory_limit = {sql_string(memory_limit)}")


def describe_holder(info: dict[str, Any]) -> str:
    """One line about whoever holds (or last held) a lock file, from what it wrote there."""
    if not info:
        return "an unknown process (it wrote no details: not mlstack, or just starting)"
    host = info.get("host")
    parts = [
        f"pid {info.get('pid', '?')}",
        f"on {host}" if host and host != socket.gethostname() else "",
        f"run {str(info['run_id'])[:8]}" if info.get("run_id") else "",
        f"step {info['step']}" if info.get("step") else "",
        f"({info['purpose']})" if info.get("purpose") else "",
        f"for {time.time() - float(info['since']):.0f} s" if info.get("since") else "",
    ]
    return " ".join(part for part in parts if part)


class ProcessFileLock:
    """A `flock`, re-entrant in the process (`filelock` would erase a killed holder's details)."""

    POLL_SECONDS = 0.2
    LOG_EVERY_SECONDS = 10.0

    def __init__(self, path: Path):
        self.path, self._thread_lock, self._depth, self._handle = path, threading.RLock(), 0, None

    def holder(self) -> dict[str, Any]:
        """What the current (or last) holder wrote into the lock file; {} when nothing."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):  # no file yet, or read while the holder wrote it
            return {}
        return info if isinstance(info, dict) else {}

    @contextmanager
    def hold(
        self, timeout: float = LOCK_TIMEOUT_SECONDS, purpose: str = "", log: Say | None = None
    ) -> Iterator[None]:
        """Hold the lock; wait at most `timeout` seconds for another process to release it."""
        say = log or get_dagster_logger().info
        started, said = time.monotonic(), []  # when "waiting" was said (seconds into the wait)
        doing = f" to {purpose}" if purpose else ""

        def waiting(holder: str) -> None:
            waited = time.monotonic() - started
            if waited >= timeout:
                raise WarehouseLockTimeout(
                    f"gave up waiting{doing} for the warehouse {self.path.with_suffix('')}:"
                    f" its lock {self.path} is held by {holder}; waited {waited:.0f} s"
                    f" (MLSTACK_LOCK_TIMEOUT_SECONDS={timeout:g})"
                )
            if not said or waited - said[-1] >= self.LOG_EVERY_SECONDS:
                said.append(waited)
                say(
                    f"waiting{doing} for the warehouse lock {self.path}: held by {holder};"
                    f" waited {waited:.0f} s of at most {timeout:g} s"
                )

        while not self._thread_lock.acquire(timeout=self.POLL_SECONDS):
            waiting("another thread of this process")
        try:
            if self._depth == 0:
                self._handle = self._acquire(purpose, waiting, say)
                if said:
                    waited = time.monotonic() - started
                    say(f"got the warehouse lock {self.path} after {waited:.1f} s")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:  # emptied: details left in it mean the holder was killed
                    self._handle.truncate(0)
                    self._handle.close()  # closing releases the flock
        finally:
            self._thread_lock.release()

    def _acquire(self, purpose: str, waiting: Say, say: Say) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")  # not "w": that would erase the holder's details
        try:
            while True:
                with suppress(BlockingIOError):  # held by another process: say so, and poll
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                waiting(describe_holder(self.holder()))
                time.sleep(self.POLL_SECONDS)
        except BaseException:
            handle.close()
            raise
        left = self.holder()
        if left.get("pid") not in (None, os.getpid()) and not pid_alive(left["pid"]):
            say(
                f"the warehouse lock {self.path} was left by {describe_holder(left)}, which"
                " ended without releasing it (killed?); the system dropped its lock"
            )
        mine = {"pid": os.getpid(), "host": socket.gethostname()}
        with suppress(Exception):  # outside a step (scripts, tests, the CLI) the pid says enough
            context = OpExecutionContext.get()
            mine.update(run_id=context.run_id, step=context.op.name)
        handle.truncate(0)  # "a+" writes at the end, here its start
        handle.write(json.dumps({**mine, "purpose": purpose, "since": time.time()}))
        handle.flush()
        return handle


_FILE_LOCKS: dict[Path, ProcessFileLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def duckdb_file_lock(database: str | Path) -> ProcessFileLock:
    """The one lock of a DuckDB file in this process."""
    path = Path(f"{Path(database).resolve()}.lock")
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, ProcessFileLock(path))


class DuckDBWarehouse(Warehouse):
    """A DuckDB file; publishing is one `CREATE OR REPLACE TABLE` transaction."""

    kind: ClassVar[str] = "duckdb"
    duckdb: DuckDBResource
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS
    memory_limit: str = "128MB"

    def setup_for_execution(self, context: Any) -> None:
        """Fail the runs a killed process left STARTED (`processes.fail_orphaned_runs`)."""
        if context.instance is not None:
            for line in fail_orphaned_runs(context.instance):
                context.log.info(f"mlstack: {line}")

    @contextmanager
    def session(self, purpose: str = "") -> Iterator[None]:
        with duckdb_file_lock(self.duckdb.database).hold(self.lock_timeout_seconds, purpose):
            yield

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """Holding the lock, closed even after a failed statement (dagster-duckdb's stays open)."""
        with self.session(), closing(self.duckdb.get_connection().__enter__()) as conn:
            limit_memory(conn, self.memory_limit)
            yield conn

    def qualified(self, schema: str, table: str) -> str:
        return f"{sql_identifier(schema)}.{sql_identifier(table)}"

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

    def ensure_dataset(self, dataset: str) -> None:
        self.query(f"create schema if not exists {sql_identifier(dataset)}")

    def load_parquet(self, schema: str, table: str, uri: str, lake: Any) -> None:
        """One transaction: readers see the table before or after, never between."""
        with self.connection() as conn:
            lake.attach(conn)  # a gs:// file is read through gcsfs
            conn.execute(f"create schema if not exists {sql_identifier(schema)}")
            conn.execute(
                f"create or replace table {self.qualified(schema, table)} as select * from"
                f" read_parquet({sql_string(uri)}, hive_partitioning = false)"
            )

    def export_relation(self, schema: str, table: str, lake: Any, data_key: str) -> Exported:
        with tempfile.TemporaryDirectory(prefix="mlstack-export-") as workdir:
            parquet = Path(workdir) / "data.parquet"
            [(rows,)] = self.query(
                f"copy (select * from {self.qualified(schema, table)})"
                f" to {sql_string(str(parquet))} ({PARQUET_COPY_OPTIONS})"
            )
            sha256 = file_sha256(parquet)
            lake.put_file(parquet, data_key)
        columns = [list(column) for column in self.table_columns(schema, table) or []]
        return Exported(rows=int(rows), columns=columns, sha256=sha256)

    def publish_relations(
        self, source_schema: str, tables: list[str], views: Views = None, before_commit: Hook = None
    ) -> None:
        with self.connection() as conn:
            conn.execute(f"create schema if not exists {sql_identifier(self.dataset)}")
            conn.execute("begin transaction")
            try:
                for name, sql in (views or {}).items():
                    view = self.qualified(self.dataset, name)
                    conn.execute(f"create or replace view {view} as {sql}")
                for table in tables:
                    source = self.qualified(source_schema, table)
                    target = self.qualified(self.dataset, table)
                    conn.execute(f"create or replace table {target} as select * from {source}")
                if before_commit is not None:
                    before_commit()
                conn.execute("commit")
            except Exception:
                conn.execute("rollback")
                raise

    def sqlalchemy_url(self, schema: str) -> str:
        return f"duckdb:///{self.duckdb.database}"

    def prepare_sqlalchemy_engine(self, engine: Any) -> None:
        """`limit_memory` on checkout, not connect: a connection pooled before is covered too."""
        from sqlalchemy import event

        memory_limit = self.memory_limit
        event.listen(engine, "checkout", lambda conn, *_: limit_memory(conn, memory_limit))


class _HoldingTheLock(IOManager):
    """An IO manager that holds the warehouse lock while the one it wraps reads or writes."""

    def __init__(self, inner: IOManager, lock: ProcessFileLock, timeout: float):
        self.inner, self.lock, self.timeout = inner, lock, timeout

    def handle_output(self, context: Any, obj: Any) -> None:
        with self.lock.hold(self.timeout, f"store {context.asset_key.to_user_string()}"):
            self.inner.handle_output(context, obj)

    def load_input(self, context: Any) -> Any:
        with self.lock.hold(self.timeout, f"load {context.asset_key.to_user_string()}"):
            return self.inner.load_input(context)


class LockingDuckDBPandasIOManager(DuckDBPandasIOManager):
    """dagster-duckdb's pandas IO manager, queueing on the lock (not retrying 100 s in silence)."""

    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS

    def create_io_manager(self, context: Any) -> IOManager:
        inner = super().create_io_manager(context)
        return _HoldingTheLock(inner, duckdb_file_lock(self.database), self.lock_timeout_seconds)


def build_duckdb_resources(settings: Settings) -> dict[str, Any]:
    database = str(settings.duckdb_path)
    return {
        "warehouse": DuckDBWarehouse(
            dataset=settings.dataset,
            duckdb=DuckDBResource(database=database),
            lock_timeout_seconds=settings.lock_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
        ),
        "io_manager": LockingDuckDBPandasIOManager(
            database=database,
            schema=settings.dataset,
            connection_config={"memory_limit": settings.duckdb_memory_limit},
            lock_timeout_seconds=settings.lock_timeout_seconds,
        ),
    }
