"""Raw checkpoints: every extract as it arrived (`data.parquet`, never changed) before any audit,
and its `manifest.json` (source URL and sha256, connector, rows, columns, sha256, run, audit).
Pruning keeps every checkpoint a version points at: a raw table's version is its checkpoint."""

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlstack_assets.lake import DATA, MANIFEST, Entry, Lake, entries, file_sha256, utc_label
from mlstack_assets.lake.versions import versions

PARTITION = "extracted_at="
INCOMPLETE_AFTER_SECONDS = 3600.0  # then a directory without a manifest is a killed writer's


def staging_key(source: str) -> str:
    return f"staging/raw_{source}"


class Checkpoint(Entry):
    """One extract in the lake: where it is and what its manifest says."""

    @property
    def uri(self) -> str:
        return self.lake.uri(self.key)

    def verify(self, what: str = "") -> None:
        super().verify(what or f"checkpoint {self.uri}")


def claim_checkpoint(lake: Lake, source: str, extracted_at: datetime) -> str:
    """A new checkpoint directory's key for an extract of `source` (never an existing one)."""
    key = f"{staging_key(source)}/{PARTITION}{utc_label(extracted_at)}"
    if lake.is_gcs:  # no mkdir to claim a name with: make it unguessable
        key += f"-{secrets.token_hex(3)}"
    lake.make_new_directory(key)
    return key


def complete_checkpoint(
    lake: Lake, key: str, extracted_at: datetime, sha256: str, manifest: dict[str, Any]
) -> Checkpoint:
    """Write the manifest of the checkpoint at `key`, its data in place: now it exists."""
    document = {**manifest, "extracted_at": extracted_at.astimezone(timezone.utc).isoformat()}
    document |= {"data": DATA, "sha256": sha256, "audit": None}  # audit: until record_audit
    lake.write_json(f"{key}/{MANIFEST}", document)
    return Checkpoint(lake, key, document)


def write_checkpoint(
    lake: Lake, source: str, parquet: Path, extracted_at: datetime, manifest: dict[str, Any]
) -> Checkpoint:
    """Move the finished Parquet file into the lake as a new checkpoint of `source`."""
    sha256 = file_sha256(parquet)
    key = claim_checkpoint(lake, source, extracted_at)
    lake.put_file(parquet, f"{key}/{DATA}")
    return complete_checkpoint(lake, key, extracted_at, sha256, {**manifest, "source": source})


def record_audit(
    checkpoint: Checkpoint, passed: bool, failed_checks: list[str], published: bool, run_id: str
) -> Checkpoint:
    """Fill in the manifest's audit outcome (the data file is not touched)."""
    audit = {"passed": passed, "failed_checks": failed_checks, "published": published}
    audit |= {"run_id": run_id, "at": datetime.now(timezone.utc).isoformat()}
    document = {**checkpoint.manifest, "audit": audit}
    checkpoint.lake.write_json(f"{checkpoint.key}/{MANIFEST}", document)
    return Checkpoint(checkpoint.lake, checkpoint.key, document)


def checkpoints(lake: Lake, source: str) -> list[Checkpoint]:
    """Every complete checkpoint of `source`, newest first."""
    return [Checkpoint(lake, k, m) for k, m in entries(lake, staging_key(source), PARTITION)]


def prune(
    lake: Lake, source: str, keep: int, log: Callable[[str], None], now: float | None = None
) -> list[str]:
    """Remove all but the newest `keep`, the published one and those versions point at (and what
    killed writers left); returns the removed ids."""
    now = time.time() if now is None else now
    complete = checkpoints(lake, source)
    published = [c.id for c in complete if (c.manifest.get("audit") or {}).get("published")]
    kept = {version.id for version in versions(lake, source)} | set(published[:1])
    removed = [c for c in complete[keep:] if c.id not in kept]
    for checkpoint in removed:
        lake.remove(checkpoint.key)
    complete_keys = {c.key for c in complete}
    abandoned = []
    for name in lake.directories(staging_key(source)):
        key = f"{staging_key(source)}/{name}"
        if name.startswith(PARTITION) and key not in complete_keys:
            written = lake.modified(f"{key}/{DATA}") or lake.modified(key)
            if written is not None and now - written > INCOMPLETE_AFTER_SECONDS:
                lake.remove(key)
                abandoned.append(name)
    if removed or abandoned:
        log(
            f"lake: removed {len(removed)} old checkpoints of {source}"
            + (f" and {len(abandoned)} left incomplete" if abandoned else "")
            + f" (keeping the newest {keep}, the published one and those its versions point at)"
        )
    return [c.id for c in removed]
