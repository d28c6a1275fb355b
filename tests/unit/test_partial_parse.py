"""Keeping dbt's partial parse is a saving, never a reason for a build to fail."""

from pathlib import Path

from mlstack_assets.transform.build import keep_partial_parse


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
