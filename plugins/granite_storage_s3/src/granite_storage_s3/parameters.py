"""The object parameters every upload of an S3 backend carries: ACL, encryption, storage class, caching.

:class:`S3ObjectParameters` is a frozen, validated value: an invalid one cannot be built, so a typo in
a configuration fails when the backend is built, not on the first upload. The backend sends it with
every ``PutObject`` and ``CreateMultipartUpload``. This module does not import boto3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from granite_storage import ConfigurationError

__all__ = ["CANNED_ACLS", "READABLE_STORAGE_CLASSES", "SERVER_SIDE_ENCRYPTIONS", "S3ObjectParameters"]

#: The canned ACLs S3 accepts on an upload (``x-amz-acl``).
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
    }
)
#: The server-side encryptions accepted, SSE-S3 (``"AES256"``), SSE-KMS (``"aws:kms"``) and
#: dual-layer SSE-KMS (``"aws:kms:dsse"``).
SERVER_SIDE_ENCRYPTIONS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})
#: Storage classes whose objects can be read at once. ``GLACIER`` and ``DEEP_ARCHIVE`` are refused:
#: an object there cannot be opened until it is restored, which breaks every read the library makes.
READABLE_STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    }
)
_ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# RFC 9111 directives: token, or token=token, or token="quoted string", separated by commas.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_DIRECTIVE = rf'{_TCHARS}(?:=(?:{_TCHARS}|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"))?'
_CACHE_CONTROL = re.compile(rf"^{_DIRECTIVE}(?:[ \t]*,[ \t]*{_DIRECTIVE})*$")
_MAX_CACHE_CONTROL = 1024
_KMS_KEY_ID = re.compile(r"^[\x21-\x7e]{1,2048}$")

# 0.1.0's extra_put_kwargs names (PutObject's parameters) of the fields below.
_REQUEST_NAMES = {
    "acl": "ACL",
    "server_side_encryption": "ServerSideEncryption",
    "sse_kms_key_id": "SSEKMSKeyId",
    "storage_class": "StorageClass",
    "cache_control": "CacheControl",
}


@dataclass(frozen=True, slots=True)
class S3ObjectParameters:
    """Parameters stored with every object an :class:`~granite_storage_s3.S3StorageBackend` writes.

    Each is left to the bucket's defaults when ``None``. Settings in configuration go in the
    backend's table under the same names (``cache_control = "max-age=3600"``).

    Args:
        acl: A canned ACL (``"private"``, ``"bucket-owner-full-control"``, ...; see
            :data:`~granite_storage_s3.parameters.CANNED_ACLS`). Buckets with ACLs disabled
            (AWS's default since 2023) refuse any but ``"bucket-owner-full-control"``.
        server_side_encryption: ``"AES256"`` (SSE-S3, keys managed by S3), ``"aws:kms"`` (SSE-KMS)
            or ``"aws:kms:dsse"`` (dual-layer SSE-KMS).
        sse_kms_key_id: The KMS key (id, ARN or alias ARN) of SSE-KMS; only with ``"aws:kms"`` or
            ``"aws:kms:dsse"``. Without it S3 uses the account's AWS-managed key.
        storage_class: A storage class whose objects can be read at once (see
            :data:`~granite_storage_s3.parameters.READABLE_STORAGE_CLASSES`); ``GLACIER`` and
            ``DEEP_ARCHIVE`` are refused (archive with a lifecycle rule, and restore before
            reading).
        cache_control: The ``Cache-Control`` header S3 serves the object with, e.g.
            ``"private, max-age=3600"``: directives as HTTP defines them, at most 1 KiB.

    Raises:
        ConfigurationError: a value is not one S3 accepts (the message lists what it does), or
            ``sse_kms_key_id`` is given without SSE-KMS.
    """

    acl: str | None = None
    server_side_encryption: str | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    cache_control: str | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"S3 {field.name} must be a string, got {value!r}")
        _one_of("acl", self.acl, CANNED_ACLS)
        _one_of("server_side_encryption", self.server_side_encryption, SERVER_SIDE_ENCRYPTIONS)
        if self.sse_kms_key_id is not None:
            if self.server_side_encryption not in _KMS:
                raise ConfigurationError(
                    "S3 sse_kms_key_id needs server_side_encryption 'aws:kms' (or 'aws:kms:dsse'), "
                    f"got {self.server_side_encryption!r}"
                )
            if not _KMS_KEY_ID.match(self.sse_kms_key_id):
                raise ConfigurationError(f"not a KMS key id, ARN or alias: {self.sse_kms_key_id!r}")
        if self.storage_class in _ARCHIVE_STORAGE_CLASSES:
            raise ConfigurationError(
                f"S3 storage_class {self.storage_class!r} is refused: its objects cannot be read until "
                "restored; archive with a bucket lifecycle rule instead"
            )
        _one_of("storage_class", self.storage_class, READABLE_STORAGE_CLASSES)
        if self.cache_control is not None and (
            len(self.cache_control) > _MAX_CACHE_CONTROL or not _CACHE_CONTROL.match(self.cache_control)
        ):
            raise ConfigurationError(
                f"S3 cache_control is not a Cache-Control header value (directives such as "
                f"'private, max-age=3600', at most {_MAX_CACHE_CONTROL} characters): {self.cache_control!r}"
            )

    @classmethod
    def from_put_kwargs(cls, extra_put_kwargs: Mapping[str, Any]) -> S3ObjectParameters:
        """The parameters that granite-storage 0.1.0's ``extra_put_kwargs`` asked for.

        ``ACL``, ``ServerSideEncryption``, ``SSEKMSKeyId``, ``StorageClass`` and ``CacheControl``
        become the fields above, validated as they are.

        Raises:
            ConfigurationError: any other key (0.1.0 passed it to ``PutObject`` unchecked); the
                message names the keys that are understood.
        """
        by_request_name = {request: name for name, request in _REQUEST_NAMES.items()}
        unknown = sorted(set(extra_put_kwargs) - set(by_request_name))
        if unknown:
            raise ConfigurationError(
                f"extra_put_kwargs {unknown} are not supported: the S3 backend sets only "
                f"{sorted(by_request_name)} on uploads, given as the keyword arguments "
                f"{sorted(_REQUEST_NAMES)}"
            )
        return cls(**{by_request_name[key]: value for key, value in extra_put_kwargs.items()})

    def request_arguments(self) -> dict[str, str]:
        """The set parameters as ``PutObject``/``CreateMultipartUpload`` arguments (``{"ACL": ...}``)."""
        return {
            request: value
            for name, request in _REQUEST_NAMES.items()
            if (value := getattr(self, name)) is not None
        }


def _one_of(name: str, value: str | None, allowed: frozenset[str]) -> None:
    if value is not None and value not in allowed:
        raise ConfigurationError(f"S3 {name} must be one of {sorted(allowed)}, got {value!r}")
