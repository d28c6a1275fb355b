"""The container image's start-up, without Docker: parse once, then load without parsing.

Docker cannot run here, so the test plays the image's steps from `deploy/Dockerfile`
itself: the files it copies, in a directory of their own, its `ENV`, and its `CMD`'s two
commands, the start-up parse and the code server's definition load (the same
`-m mlstack_assets` import the gRPC server does).
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


def _image_env() -> dict[str, str]:
    env = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("ENV "):
            env |= dict(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def _start_commands() -> list[str]:
    [cmd] = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    argv = json.loads(cmd[4:])
    assert argv[:2] == ["sh", "-c"]
    return [part.strip() for part in argv[2].split("&&")]


def _copy_image_files(root: Path) -> None:
    """What the Dockerfile's COPY lines put into the image's working directory."""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, destination = line[5:].split()
        for source in sources:
            path = REPO_ROOT / source
            # Docker: into a directory (`./`) by name, else to the destination given
            target = root / (Path(source).name if destination.endswith("/") else destination)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("target"))
            else:
                shutil.copy(path, target)


def test_the_image_parses_at_start_up_and_its_code_server_loads_without_parsing(tmp_path):
    image = tmp_path / "opt-mlstack"
    image.mkdir()
    _copy_image_files(image)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(image),  # the image's copy, not this checkout
        **_image_env(),
        "MLSTACK_HOME": str(tmp_path / "home"),
        "MLSTACK_BQ_PROJECT": "where-it-runs",  # known only at start-up
        # what the deployment's secrets provide (the Helm values' envSecrets)
        "MLSTACK_AIRBYTE_WORKSPACE_ID": "0b1c7c1e-5d2f-4a6e-9a0e-2f4c5d6e7f80",
        "MLSTACK_AIRBYTE_CLIENT_ID": "client",
        "MLSTACK_AIRBYTE_CLIENT_SECRET": "secret",
        "MLSTACK_LAKE": "gs://where-it-runs-lake/mlstack",
    }
    parse, serve = _start_commands()
    assert parse == "python -m mlstack_assets.transform.project"
    assert re.fullmatch(r"exec dagster api grpc .* -m mlstack_assets", serve)

    subprocess.run(
        [sys.executable, "-m", "mlstack_assets.transform.project"],
        cwd=image,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    manifest = image / "dbt_project" / "target" / "manifest.json"
    parsed_at = manifest.stat().st_mtime_ns
    loaded = subprocess.run(
        [sys.executable, "-c", "import mlstack_assets.definitions as d; print(d.__file__)"],
        cwd=image,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert loaded.stdout.strip() == str(image / "mlstack_assets" / "definitions.py")
    assert manifest.stat().st_mtime_ns == parsed_at  # the code server did not parse again
    nodes = json.loads(manifest.read_text())["nodes"].values()
    assert {n["database"] for n in nodes if n["resource_type"] == "model"} == {"where-it-runs"}
