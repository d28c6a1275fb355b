"""Keeping dbt's partial parse is a saving, never a reason for a build to fail."""

import os
from pathlib import Path

from mlstack_assets.transform.build import RUN_TARGETS_KEPT, keep_partial_parse, prune_run_targets


def test_the_partial_parse_of_a_build_becomes_the_projects(tmp_path: Path):
    run, target = tmp_path / "run", tmp_path / "target"
    run.mkdir()
    target.mkdir()
    (run / "partial_parse.msgpack").write_bytes(b"parsed with this run's vars")
    (target / "partial_parse.msgpack").write_bytes(b"parsed with other vars")

    keep_partial_parse(run, target)

    assert (target / "partial_parse.msgpack").read_bytes() == b"parsed with this run's vars"
    assert [p.name for p in target.iterdir()] == ["partial_parse.msgpack"]


def test_a_target_that_cannot_be_written_leaves_the_build_alone(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "partial_parse.msgpack").write_bytes(b"parsed")

    keep_partial_parse(run, tmp_path / "no such folder")  # does not raise

    assert not (tmp_path / "no such folder").exists()


def test_only_the_newest_run_folders_of_the_dbt_step_are_kept(tmp_path: Path):
    """dagster-dbt leaves a `<op>-<run>-<random>/` folder per build (its dbt.log, compiled SQL
    and manifest, ~2 MB); the newest stay for reading a recent run, older ones go."""
    target = tmp_path / "target"
    folders = []
    for age in range(14):  # the oldest first
        folder = target / f"dbt_models-{age:07d}-abcdef{age % 10}"
        (folder / "compiled").mkdir(parents=True)
        (folder / "dbt.log").write_text("a run's log")
        os.utime(folder, (1_000_000 + age, 1_000_000 + age))
        folders.append(folder)
    others = [target / "6381fb8", target / "compiled", target / "other_op-1234567-abcdefg"]
    for other in others:
        other.mkdir()
        os.utime(other, (1, 1))  # older than every run folder: not the dbt step's, never pruned
    (target / "manifest.json").write_text("{}")

    removed = prune_run_targets(folders[-1])

    assert sorted(removed) == folders[: 14 - RUN_TARGETS_KEPT]
    assert sorted(p for p in target.glob("dbt_models-*")) == folders[14 - RUN_TARGETS_KEPT :]
    assert all(other.is_dir() for other in others)
    assert (target / "manifest.json").exists()
