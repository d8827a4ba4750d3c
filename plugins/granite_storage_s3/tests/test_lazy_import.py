"""boto3 is imported only when the S3 backend is used, never by discovery or a local-only manager."""

import json
import subprocess
import sys
from pathlib import Path

CHECK = """
import json, sys
from granite_storage import StorageManager
import granite_storage_s3, granite_storage_s3.hooks

manager = StorageManager.from_config(
    {"backends": {"disk": {"type": "local", "root": sys.argv[1]}}, "policies": {"files": {"backend": "disk"}}}
)
assert "s3" in manager.plugins.backend_types(), "the s3 type is registered"
before = sorted(name for name in sys.modules if name.split(".")[0] in {"boto3", "botocore", "s3transfer"})
manager.plugins.create_backend("s3", {"bucket": "b", "region_name": "us-east-1"})
after = "boto3" in sys.modules
print(json.dumps({"before": before, "after": after}))
"""


def test_discovery_and_a_local_manager_do_not_import_boto3(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert imported["before"] == []
    assert imported["after"], "building an s3 backend imports boto3 (the check above would see it)"
