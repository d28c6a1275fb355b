"""Raw checkpoints: every extract as it arrived, before anything audits it.

`<lake>/staging/raw_<source>/extracted_at=<UTC>/` holds `data.parquet` (the connector's
rows with Airbyte's `_airbyte_*` columns) and `manifest.json` (source URL and sha256,
connector and version, rows, columns and types, the file's sha256, the run, and the
audit's outcome once known). The data file is written once and never changed. A raw
table's version is the checkpoint it was published from, so pruning never removes a
checkpoint that a version of its table points at.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlstack_assets.lake import DATA, MANIFEST, Entry, Lake, entries, file_sha256, utc_label

PARTITION = "extracted_at="
# a checkpoint directory without a manifest (a writer killed mid-way) older than this goes
INCOMPLETE_AFTER_SECONDS = 3600.0


def staging_key(source: str) -> str:
    return f"staging/raw_{source}"


class Checkpoint(Entry):
    """One extract in the lake: where it is and what its manifest says."""

    @property
    def uri(self) -> str:
        return self.lake.uri(self.key)

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(name, dtype) for name, dtype in self.manifest["columns"]]

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
    """Write the manifest of the checkpoint at `key`, whose data file is in place: from now
    on the checkpoint exists for every reader."""
    document = {
        **manifest,
        "extracted_at": extracted_at.astimezone(timezone.utc).isoformat(),
        "data": DATA,
        "sha256": sha256,
        "audit": None,
    }
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
    audit = {
        "passed": passed,
        "failed_checks": failed_checks,
        "published": published,
        "run_id": run_id,
        "at": datetime.now(timezone.utc).isoformat(),
    }
    document = {**checkpoint.manifest, "audit": audit}
    checkpoint.lake.write_json(f"{checkpoint.key}/{MANIFEST}", document)
    return Checkpoint(checkpoint.lake, checkpoint.key, document)


def checkpoints(lake: Lake, source: str) -> list[Checkpoint]:
    """Every complete checkpoint of `source`, newest first."""
    return [Checkpoint(lake, k, m) for k, m in entries(lake, staging_key(source), PARTITION)]


def prune(
    lake: Lake,
    source: str,
    keep: int,
    log: Callable[[str], None],
    now: float | None = None,
) -> list[str]:
    """Keep the `keep` newest checkpoints of `source`, the newest published one and every one
    a version of the table points at (a raw version is its checkpoint); remove the rest, and
    the directories a killed writer left without a manifest. Returns the removed ids."""
    from mlstack_assets.lake.versions import versions

    now = time.time() if now is None else now
    complete = checkpoints(lake, source)
    versioned = {version.id for version in versions(lake, source)}
    published = next(
        (c.id for c in complete if (c.manifest.get("audit") or {}).get("published")), None
    )
    removed = [c for c in complete[keep:] if c.id not in versioned and c.id != published]
    for checkpoint in removed:
        lake.remove(checkpoint.key)
    complete_keys = {c.key for c in complete}
    abandoned = []
    for name in lake.directories(staging_key(source)):
        key = f"{staging_key(source)}/{name}"
        if not name.startswith(PARTITION) or key in complete_keys:
            continue
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
