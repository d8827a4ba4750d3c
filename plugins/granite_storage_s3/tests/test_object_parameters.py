"""Object parameters (ACL, server-side encryption, storage class, Cache-Control) on every upload.

What SeaweedFS stores and reports is tested there, for single-part and multipart uploads alike; what
it does not keep (see the S3 guide) is tested on moto: SSE-KMS with a key id, and ACLs.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest

from granite_storage import ConfigurationError, PluginHost, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_s3 import S3ObjectParameters, S3StorageBackend
from granite_storage_s3.backend import MIN_PART_SIZE
from granite_storage_s3.testing import S3Server

SMALL = b"small object"
LARGE = b"\x00" * MIN_PART_SIZE + b"tail"  # two parts of a 5 MiB multipart upload
SIZES = pytest.mark.parametrize("content", [SMALL, LARGE], ids=["single-part", "multipart"])


def recorded(backend: S3StorageBackend) -> list[tuple[str, dict[str, Any]]]:
    """The upload requests ``backend``'s client makes from now on: (operation, its parameters)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, {key: value for key, value in params.items() if key != "Body"}))

    backend.client.meta.events.register("provide-client-params.s3", record)
    return calls


def store(backend: S3StorageBackend, content: bytes) -> tuple[StorageManager, StoredObjectRef]:
    manager = StorageManager(
        backends={"s3": backend},
        policies={"files": StoragePolicy("files", backend_key="s3")},
        plugins=PluginHost(disabled=()),
    )
    ref = manager.put_stream(
        storage_key="files", model_name="doc", entity_id="1", field_name="f", stream=io.BytesIO(content)
    )
    return manager, ref


def head(backend: S3StorageBackend, ref: StoredObjectRef) -> dict[str, Any]:
    return dict(backend.client.head_object(Bucket=backend.bucket, Key=f"{backend.prefix}/{ref.location}"))


def upload_operations(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in calls if name in {"PutObject", "CreateMultipartUpload"}]


# -- on the real server and on moto -----------------------------------------------------------------------


@SIZES
def test_cache_control_and_storage_class_are_stored_with_the_object(s3: S3Server, content: bytes) -> None:
    backend = s3.backend(
        part_size=MIN_PART_SIZE, cache_control="private, max-age=3600", storage_class="STANDARD_IA"
    )
    calls = recorded(backend)
    manager, ref = store(backend, content)
    assert upload_operations(calls) == (["PutObject"] if content is SMALL else ["CreateMultipartUpload"])
    stored = head(backend, ref)
    assert stored["CacheControl"] == "private, max-age=3600"
    assert stored["StorageClass"] == "STANDARD_IA"
    assert manager.get(ref) == content


@SIZES
def test_sse_s3_encrypts_the_object(s3: S3Server, content: bytes) -> None:
    backend = s3.backend(part_size=MIN_PART_SIZE, server_side_encryption="AES256")
    manager, ref = store(backend, content)
    assert head(backend, ref)["ServerSideEncryption"] == "AES256"
    assert manager.get(ref) == content


def test_without_parameters_an_upload_sends_none_of_them(s3: S3Server) -> None:
    backend = s3.backend()
    calls = recorded(backend)
    store(backend, SMALL)
    sent = set(calls[-1][1])
    assert not sent & {"ACL", "ServerSideEncryption", "SSEKMSKeyId", "StorageClass", "CacheControl"}


def test_parameters_from_configuration_reach_the_real_server(
    real_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", real_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", real_s3.secret_key)
    manager = StorageManager.from_config(
        {
            "backends": {
                "files": {
                    "type": "s3",
                    "bucket": real_s3.bucket,
                    "prefix": "parameters",
                    "region_name": real_s3.region,
                    "endpoint_url": real_s3.endpoint_url,
                    "addressing_style": "path",
                    "cache_control": "public, max-age=86400, immutable",
                    "storage_class": "STANDARD_IA",
                    "server_side_encryption": "AES256",
                }
            },
            "policies": {"files": {"backend": "files"}},
        },
    )
    backend = manager.backend("files")
    assert isinstance(backend, S3StorageBackend)
    assert backend.object_parameters == S3ObjectParameters(
        server_side_encryption="AES256",
        storage_class="STANDARD_IA",
        cache_control="public, max-age=86400, immutable",
    )
    ref = manager.put_bytes(
        storage_key="files", model_name="doc", entity_id="1", field_name="f", content=b"c"
    )
    stored = head(backend, ref)
    assert (stored["CacheControl"], stored["StorageClass"], stored["ServerSideEncryption"]) == (
        "public, max-age=86400, immutable",
        "STANDARD_IA",
        "AES256",
    )


# -- on moto: what SeaweedFS does not keep ----------------------------------------------------------------


@SIZES
def test_sse_kms_uses_the_configured_key(moto_s3: S3Server, content: bytes) -> None:
    import boto3

    kms = boto3.client("kms", region_name=moto_s3.region)
    key_id = kms.create_key(Description="granite-storage test")["KeyMetadata"]["Arn"]
    backend = moto_s3.backend(
        part_size=MIN_PART_SIZE, server_side_encryption="aws:kms", sse_kms_key_id=key_id
    )
    calls = recorded(backend)
    manager, ref = store(backend, content)
    sent = [params for name, params in calls if name in {"PutObject", "CreateMultipartUpload"}]
    assert [(params["ServerSideEncryption"], params["SSEKMSKeyId"]) for params in sent] == [
        ("aws:kms", key_id)
    ]
    stored = head(backend, ref)
    assert (stored["ServerSideEncryption"], stored["SSEKMSKeyId"]) == ("aws:kms", key_id)
    assert manager.get(ref) == content


@SIZES
def test_a_canned_acl_is_applied_to_the_object(moto_s3: S3Server, content: bytes) -> None:
    backend = moto_s3.backend(part_size=MIN_PART_SIZE, acl="public-read")
    _, ref = store(backend, content)
    grants = backend.client.get_object_acl(Bucket=backend.bucket, Key=f"{backend.prefix}/{ref.location}")
    everyone = [
        grant["Permission"]
        for grant in grants["Grants"]
        if grant.get("Grantee", {}).get("URI") == "http://acs.amazonaws.com/groups/global/AllUsers"
    ]
    assert everyone == ["READ"]


def test_without_an_acl_the_object_stays_private(moto_s3: S3Server) -> None:
    backend = moto_s3.backend()
    _, ref = store(backend, SMALL)
    grants = backend.client.get_object_acl(Bucket=backend.bucket, Key=f"{backend.prefix}/{ref.location}")
    assert all("URI" not in grant.get("Grantee", {}) for grant in grants["Grants"])


# -- 0.1.0's extra_put_kwargs -----------------------------------------------------------------------------


def test_extra_put_kwargs_are_mapped_onto_the_parameters_with_a_deprecation_warning(
    moto_s3: S3Server,
) -> None:
    with pytest.warns(DeprecationWarning, match="extra_put_kwargs=.*is deprecated; pass acl="):
        backend = S3StorageBackend(
            bucket=moto_s3.bucket,
            prefix="legacy",
            client=moto_s3.client(),
            extra_put_kwargs={"ServerSideEncryption": "AES256", "CacheControl": "no-cache"},
        )
    assert backend.object_parameters == S3ObjectParameters(
        server_side_encryption="AES256", cache_control="no-cache"
    )
    _, ref = store(backend, SMALL)
    stored = head(backend, ref)
    assert (stored["ServerSideEncryption"], stored["CacheControl"]) == ("AES256", "no-cache")


@pytest.mark.parametrize(
    ("extra_put_kwargs", "options", "message"),
    [
        ({"ContentType": "text/plain"}, {}, r"extra_put_kwargs \['ContentType'\] are not supported"),
        ({"Metadata": {"a": "b"}}, {}, "keyword arguments"),
        ({"ACL": "public-red"}, {}, "acl must be one of"),
        ({"CacheControl": "max-age=1"}, {"cache_control": "no-cache"}, "cache_control is given both"),
        (["ACL"], {}, "must be a mapping"),
    ],
)
def test_extra_put_kwargs_that_do_not_map_are_refused(
    extra_put_kwargs: Any, options: dict[str, Any], message: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigurationError, match=message):
            S3StorageBackend("bucket", region_name="us-east-1", extra_put_kwargs=extra_put_kwargs, **options)


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"acl": "public"}, "acl must be one of"),
        ({"server_side_encryption": "aes256"}, "server_side_encryption must be one of"),
        (
            {"server_side_encryption": "AES256", "sse_kms_key_id": "k"},
            "needs server_side_encryption 'aws:kms'",
        ),
        ({"sse_kms_key_id": "alias/app"}, "needs server_side_encryption"),
        ({"server_side_encryption": "aws:kms", "sse_kms_key_id": "a key"}, "not a KMS key id"),
        ({"storage_class": "GLACIER"}, "cannot be read until restored"),
        ({"storage_class": "DEEP_ARCHIVE"}, "cannot be read until restored"),
        ({"storage_class": "standard"}, "storage_class must be one of"),
        ({"cache_control": "max-age=60\r\nX-Injected: 1"}, "not a Cache-Control header value"),
        ({"cache_control": ""}, "not a Cache-Control header value"),
        ({"cache_control": "max-age=60,"}, "not a Cache-Control header value"),
        ({"cache_control": 'no-cache="caf\u00e9"'}, "not a Cache-Control header value"),
        ({"cache_control": "x" * 1025}, "not a Cache-Control header value"),
        ({"cache_control": 3600}, "cache_control must be a string"),
    ],
)
def test_an_invalid_parameter_is_a_configuration_error_at_build_time(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        S3ObjectParameters(**options)
    host = PluginHost(disabled=())
    host.load_entry_points()
    with pytest.raises(ConfigurationError, match=message):
        host.create_backend("s3", {"bucket": "b", "region_name": "us-east-1", **options})


@pytest.mark.parametrize(
    "cache_control",
    [
        "no-store",
        "private, max-age=0, must-revalidate",
        'no-cache="Set-Cookie, Authorization"',
        "max-age=1 ,\tpublic",
    ],
)
def test_valid_cache_control_values_are_accepted(cache_control: str) -> None:
    assert S3ObjectParameters(cache_control=cache_control).request_arguments() == {
        "CacheControl": cache_control
    }


def test_the_parameters_are_frozen() -> None:
    parameters = S3ObjectParameters(acl="private")
    with pytest.raises(AttributeError):
        parameters.acl = "public-read"  # type: ignore[misc]
