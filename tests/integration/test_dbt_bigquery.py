"""The dbt project's BigQuery target: it parses and compiles offline, into the right dataset."""

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mlstack_assets.transform.project import dbt_vars_args
from tests.conftest import REPO_ROOT
from tests.support.processes import offline
from tests.support.settings import settings_from


def write_placeholder_service_account(path: Path, project: str) -> Path:
    """A key file shaped like Google's: dbt can build credentials from it without network."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": "placeholder",
                "private_key": pem,
                "client_email": f"ci@{project}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


def test_bigquery_target_compiles_offline_into_the_configured_project_and_dataset(tmp_path: Path):
    env = {
        **os.environ,
        "MLSTACK_WAREHOUSE": "bigquery",
        "MLSTACK_BQ_PROJECT": "acme-ml-prod",
        "MLSTACK_DATASET": "lesson_data",
        "GOOGLE_APPLICATION_CREDENTIALS": str(
            write_placeholder_service_account(tmp_path / "sa.json", "acme-ml-prod")
        ),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    dbt = str(Path(sys.executable).parent / "dbt")
    target = tmp_path / "target"

    completed = subprocess.run(
        offline(
            [
                dbt,
                "compile",
                "--target",
                "bigquery",
                "--no-populate-cache",
                "--target-path",
                str(target),
                *dbt_vars_args(settings_from(env)),  # as mlstack runs dbt
            ]
        ),
        cwd=REPO_ROOT / "dbt_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stdout[-3000:]
    compiled = target / "compiled" / "mlstack" / "models"
    staging = (compiled / "staging" / "stg_mlops_course__tags.sql").read_text()
    marts = (compiled / "marts" / "labeled_projects.sql").read_text()
    assert "`acme-ml-prod`.`lesson_data`.`tags`" in staging
    # models are built and tested in the audit dataset, then published (write-audit-publish)
    assert "`acme-ml-prod`.`lesson_data_audit`.`stg_mlops_course__projects`" in marts
    assert "cast(id as bigint)" in staging  # BIGINT is an INT64 alias in BigQuery
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "bigquery"
