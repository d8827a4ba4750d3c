"""Memory stays bounded by part size times concurrency: a GiB of unknown length goes up to a real S3
server and comes back, and the peak resident set grows by no more than the parts in flight.

Measured in a fresh interpreter, the way the local backend's memory test does it (see
``plugins/granite_storage_local/tests/test_streaming_memory.py``): ``resident`` is the peak after the
operation (``VmHWM``) minus what was resident just before it (``VmRSS``); ``maxrss`` is the growth of
``ru_maxrss``, a weaker second opinion.
"""

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from granite_storage_s3.testing import S3Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

GIB = 1024**3
MIB = 1024**2
PART_SIZE = 8 * MIB
MAX_CONCURRENCY = 4
# The parts one upload may hold: those in flight and the one being read, max_concurrency in all.
PARTS_KIB = PART_SIZE * MAX_CONCURRENCY // 1024
# What botocore, urllib3 and the upload threads add on top of the parts: measured at 0.3 MiB (resident,
# 1 GiB in 8 MiB parts, 4 at once); the rest is margin for allocator and page-size noise.
ALLOWANCE_KIB = 4 * 1024
READ_LIMIT_KIB = 16 * 1024

MEASURE = """
import hashlib, json, os, re, resource, sys
from granite_storage import PluginHost, StorageManager, StoragePolicy
from granite_storage_s3 import S3StorageBackend

bucket, size, part_size, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
MIB = 1024 * 1024
BLOCK = os.urandom(MIB)


def memory_kib():
    with open("/proc/self/status") as file:
        status = file.read()
    read = lambda name: int(re.search(name + r":\\s+(\\d+) kB", status).group(1))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss": read("VmRSS"), "hwm": read("VmHWM"), "maxrss": maxrss}


def growth(before, after):
    return {"resident": after["hwm"] - before["rss"], "maxrss": after["maxrss"] - before["maxrss"]}


class RepeatingStream:
    # Non-seekable, of unknown length, short reads of at most 1 MiB: `size` bytes of BLOCK repeated.
    def __init__(self, size):
        self.remaining = size
        self.offset = 0

    def read(self, n=-1):
        if n is None or n < 0:
            raise AssertionError("the stream was asked for all of its content at once")
        n = min(n, self.remaining, MIB - self.offset)
        chunk = BLOCK if n == MIB else BLOCK[self.offset : self.offset + n]
        self.offset = (self.offset + n) % MIB
        self.remaining -= n
        return chunk


backend = S3StorageBackend(
    bucket,
    prefix="memory",
    endpoint_url=os.environ["TEST_S3_ENDPOINT"],
    region_name="us-east-1",
    part_size=part_size,
    max_concurrency=concurrency,
)
manager = StorageManager(
    backends={"s3": backend},
    policies={"big": StoragePolicy("big", backend_key="s3")},
    plugins=PluginHost(disabled=()),
)
# Imports are done; one small upload warms the client (connection pool, credentials, endpoints).
manager.put_bytes(storage_key="big", model_name="m", entity_id="0", field_name="f", content=b"warm")
before = memory_kib()
ref = manager.put_stream(
    storage_key="big", model_name="m", entity_id="1", field_name="f", stream=RepeatingStream(size)
)
after_put = memory_kib()
read_back, digest = 0, hashlib.sha256()
with manager.open(ref) as stream:
    while chunk := stream.read(MIB):
        read_back += len(chunk)
        digest.update(chunk)
after_get = memory_kib()
expected = hashlib.sha256()
for _ in range(size // MIB):
    expected.update(BLOCK)
uploads = backend.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
manager.delete(ref)
print(json.dumps({
    "put_growth_kib": growth(before, after_put),
    "get_growth_kib": {
        "resident": after_get["hwm"] - after_put["rss"] if after_get["hwm"] > after_put["hwm"] else 0,
        "maxrss": after_get["maxrss"] - after_put["maxrss"],
    },
    "size": ref.size,
    "read_back": read_back,
    "checksum_ok": ref.checksum == "sha256:" + expected.hexdigest() == "sha256:" + digest.hexdigest(),
    "uploads_left": len(uploads),
}))
"""


@pytest.fixture(scope="module")
def one_gib_round_trip(real_s3: S3Server) -> dict[str, Any]:
    """Store 1 GiB through ``put_stream`` on the real server and read it back, in a fresh interpreter."""
    environment = {
        **os.environ,
        "TEST_S3_ENDPOINT": real_s3.endpoint_url or "",
        "AWS_ACCESS_KEY_ID": real_s3.access_key,
        "AWS_SECRET_ACCESS_KEY": real_s3.secret_key,
    }
    arguments = [real_s3.bucket, str(GIB), str(PART_SIZE), str(MAX_CONCURRENCY)]
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    measured: dict[str, Any] = json.loads(result.stdout)
    print("S3 1 GiB round trip:", measured)
    return measured


@pytest.mark.slow
def test_a_gib_stream_of_unknown_length_is_stored_whole(one_gib_round_trip: dict[str, Any]) -> None:
    assert one_gib_round_trip["size"] == one_gib_round_trip["read_back"] == GIB
    assert one_gib_round_trip["checksum_ok"]
    assert one_gib_round_trip["uploads_left"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("reading", ["resident", "maxrss"])
def test_uploading_a_gib_holds_no_more_than_the_parts_in_flight(
    one_gib_round_trip: dict[str, Any], reading: str
) -> None:
    assert one_gib_round_trip["put_growth_kib"][reading] <= PARTS_KIB + ALLOWANCE_KIB, one_gib_round_trip


@pytest.mark.slow
@pytest.mark.parametrize("reading", ["resident", "maxrss"])
def test_reading_a_gib_back_in_chunks_adds_at_most_16_mib(
    one_gib_round_trip: dict[str, Any], reading: str
) -> None:
    assert one_gib_round_trip["get_growth_kib"][reading] <= READ_LIMIT_KIB, one_gib_round_trip
