"""Raw checkpoints: every extract, as it arrived, before anything audits it.

`<lake>/staging/raw_<source>/extracted_at=<UTC>/` holds `data.parquet` (the rows the
connector produced, with Airbyte's `_airbyte_*` columns) and `manifest.json` (source URL
and fingerprint, connector and version, rows, columns and types, the file's sha256, the
run, and the audit outcome once known). The data file is written once and never
changed; only the manifest's `audit` is filled in after the audit. Checkpoints of failed
audits stay for inspection; `prune` keeps the newest few and never the one a published
table came from.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlstack_assets.lake import MANIFEST, Lake, LakeError, file_sha256

DATA = "data.parquet"
PARTITION = "extracted_at="
# a checkpoint directory without a manifest (a writer killed mid-way) older than this goes
INCOMPLETE_AFTER_SECONDS = 3600.0


def staging_key(source: str) -> str:
    return f"staging/raw_{source}"


def extracted_at_label(moment: datetime) -> str:
    """`20261201T214011.123456Z`: sortable, unique to the microsecond, safe in any path."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


@dataclass(frozen=True)
class Checkpoint:
    """One extract in the lake: where it is and what its manifest says."""

    lake: Lake
    key: str  # staging/raw_<source>/extracted_at=<UTC>
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        """The extract's UTC timestamp label, e.g. `20261201T214011.123456Z`."""
        return self.key.rsplit(PARTITION, 1)[-1]

    @property
    def data_uri(self) -> str:
        """The Parquet file (a local path or a gs:// URI) that staging is loaded from."""
        return self.lake.uri(f"{self.key}/{DATA}")

    @property
    def uri(self) -> str:
        return self.lake.uri(self.key)

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(name, dtype) for name, dtype in self.manifest["columns"]]

    @property
    def published(self) -> bool:
        return bool((self.manifest.get("audit") or {}).get("published"))

    def verify(self) -> None:
        """Raise `LakeError` unless the data file is the one the manifest describes."""
        found = self.lake.sha256(f"{self.key}/{DATA}")
        if found != self.manifest["sha256"]:
            raise LakeError(
                f"{self.data_uri} has sha256 {found}, its manifest says"
                f" {self.manifest['sha256']}: the file was changed after it was written"
            )


def claim_checkpoint(lake: Lake, source: str, extracted_at: datetime) -> str:
    """A new checkpoint directory's key for an extract of `source` (never an existing one)."""
    key = f"{staging_key(source)}/{PARTITION}{extracted_at_label(extracted_at)}"
    if lake.is_gcs:  # no mkdir to claim a name with: make it unguessable
        key += f"-{secrets.token_hex(3)}"
    lake.make_new_directory(key)
    return key


def complete_checkpoint(
    lake: Lake, key: str, extracted_at: datetime, sha256: str, manifest: dict[str, Any]
) -> Checkpoint:
    """Write the manifest of the checkpoint at `key`, whose data file is in place: from
    now on the checkpoint exists for every reader."""
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
    """Put the finished Parquet file `parquet` into the lake as a new checkpoint of
    `source` with `manifest` (plus the file's sha256); never overwrites."""
    sha256 = file_sha256(parquet)
    key = claim_checkpoint(lake, source, extracted_at)
    lake.put_file(parquet, f"{key}/{DATA}")
    return complete_checkpoint(lake, key, extracted_at, sha256, {**manifest, "source": source})


def record_audit(
    checkpoint: Checkpoint, passed: bool, failed_checks: list[str], published: bool, run_id: str
) -> Checkpoint:
    """Fill in the manifest's audit outcome (the data file is not touched)."""
    document = {
        **checkpoint.manifest,
        "audit": {
            "passed": passed,
            "failed_checks": failed_checks,
            "published": published,
            "run_id": run_id,
            "at": datetime.now(timezone.utc).isoformat(),
        },
    }
    checkpoint.lake.write_json(f"{checkpoint.key}/{MANIFEST}", document)
    return Checkpoint(checkpoint.lake, checkpoint.key, document)


def checkpoints(lake: Lake, source: str) -> list[Checkpoint]:
    """Every complete checkpoint of `source`, newest first."""
    found = []
    for name in reversed(lake.directories(staging_key(source))):
        if not name.startswith(PARTITION):
            continue
        key = f"{staging_key(source)}/{name}"
        manifest = lake.read_json(f"{key}/{MANIFEST}")
        if manifest is not None:
            found.append(Checkpoint(lake, key, manifest))
    return found


def load_checkpoint(lake: Lake, source: str, checkpoint_id: str) -> Checkpoint | None:
    """The checkpoint of `source` with this id (its `extracted_at` label), if it exists."""
    return next((c for c in checkpoints(lake, source) if c.id == checkpoint_id), None)


def prune(
    lake: Lake, source: str, keep: int, log: Callable[[str], None], now: float | None = None
) -> list[str]:
    """Keep the `keep` newest checkpoints of `source`, and always the newest published one
    (what the published table came from); remove the rest, and the directories a killed
    writer left without a manifest. Returns the removed checkpoint ids."""
    now = time.time() if now is None else now
    complete = checkpoints(lake, source)
    newest_published = next((c for c in complete if c.published), None)
    removed = [
        checkpoint
        for position, checkpoint in enumerate(complete)
        if position >= keep and checkpoint is not newest_published
    ]
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
            + f" (keeping the newest {keep} and the published one)"
        )
    return [c.id for c in removed]
