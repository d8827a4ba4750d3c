"""The framework-free header functions: the content-type parser, the passive types, download headers."""

from __future__ import annotations

import pytest

from granite_storage import InvalidMetadataError
from granite_storage.headers import (
    OCTET_STREAM,
    PASSIVE_TYPES,
    MediaType,
    check_content_type,
    download_headers,
    is_passive,
    parse_content_type,
)

# -- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("image/png", "image/png"),
        ("  image/png\t", "image/png"),
        ("Text/HTML", "text/html"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/plain;charset=UTF-8", "text/plain; charset=utf-8"),
        ('text/plain; charset="utf-8"', "text/plain; charset=utf-8"),
        ("text/plain ; Charset = utf-8", None),  # no space around "=" in RFC 9110
        ("multipart/form-data; boundary=----x; charset=utf-8", "multipart/form-data; charset=utf-8"),
        ('image/png; x="y, text/html"', "image/png"),  # one quoted parameter, dropped
        ("image/png; x=y", "image/png"),
        ("text/plain;", "text/plain"),  # empty parameters are allowed by the grammar
        ("text/plain; ;charset=utf-8", "text/plain; charset=utf-8"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        ('text/plain; title="a \\"quoted\\" word"', "text/plain"),
    ],
)
def test_one_media_type_is_stored_normalised_with_only_its_charset(given: str, stored: str | None) -> None:
    if stored is None:
        with pytest.raises(InvalidMetadataError):
            check_content_type(given)
    else:
        assert check_content_type(given) == stored


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png; x=y, text/html",  # the finding: browsers take the last type of a list
        "image/png, text/html",
        "image/png,text/html",
        'image/png; x="y',  # a quote that does not close
        'image/png; x="y\\"',
        "text/html\r\n",
        "text/plain\nX-Injected: yes",
        "text/plain\x00",
        "text/plain; charset=utf-8\x7f",
        "text/pla\u00efn",
        "t\u00ebxt/plain",
        "text/plain; charset=utf-8; charset=latin-1",  # which one?
        'text/plain; charset="utf 8"',
        "text/plain; charset",
        "text/plain charset=utf-8",
        "text/plain/extra",
        "text / plain",
        "text/",
        "/plain",
        "plain",
        "",
        " ",
        "a" * 128 + "/b",
        "<script>alert(1)</script>",
    ],
)
def test_anything_but_one_media_type_is_refused(content_type: str) -> None:
    with pytest.raises(InvalidMetadataError, match="not a valid content type"):
        parse_content_type(content_type)


def test_a_parsed_type_exposes_its_parts() -> None:
    parsed = parse_content_type("Text/Plain; Charset=ISO-8859-1; format=flowed")
    assert parsed == MediaType("text", "plain", "iso-8859-1")
    assert parsed.essence == "text/plain"
    assert str(parsed) == "text/plain; charset=iso-8859-1"


# -- the passive types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["image/png", "IMAGE/JPEG", "image/webp", "audio/mpeg", "video/mp4", "application/pdf", "text/plain"],
)
def test_images_audio_video_pdf_and_plain_text_are_passive(content_type: str) -> None:
    assert is_passive(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "application/xml",
        "text/xml",
        "application/javascript",
        "application/octet-stream",
        "image/png; x=y, text/html",
        "image/jpg",  # another spelling: not on the list
        "",
        None,
    ],
)
def test_documents_that_can_run_scripts_and_anything_unknown_are_not_passive(
    content_type: str | None,
) -> None:
    assert not is_passive(content_type)


def test_the_passive_types_are_normalised_and_script_free() -> None:
    for content_type in PASSIVE_TYPES:
        assert check_content_type(content_type) == content_type
        assert "svg" not in content_type
        assert "xml" not in content_type
        assert "html" not in content_type


# -- download headers --------------------------------------------------------------------------------


def test_a_passive_type_may_be_shown_inline_without_a_sandbox() -> None:
    assert download_headers("image/png", filename="a.png", disposition="inline") == {
        "Content-Type": "image/png",
        "Content-Disposition": "inline; filename=\"a.png\"; filename*=UTF-8''a.png",
        "X-Content-Type-Options": "nosniff",
    }


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "image/svg+xml", "application/zip"])
def test_anything_else_is_an_attachment_in_a_sandbox_even_when_inline_is_asked(content_type: str) -> None:
    headers = download_headers(content_type, filename="a", disposition="inline")
    assert headers["Content-Type"] == content_type
    assert headers["Content-Disposition"] == "attachment; filename=\"a\"; filename*=UTF-8''a"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"


@pytest.mark.parametrize(
    "stored",
    [None, "image/png; x=y, text/html", "text/html\r\nSet-Cookie: a=b", "not a type"],
    ids=["none", "a-list", "header-injection", "junk"],
)
def test_a_missing_or_unparseable_stored_type_is_served_as_an_octet_stream_attachment(
    stored: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    headers = download_headers(stored, filename="page.html", disposition="inline")
    assert headers["Content-Type"] == OCTET_STREAM
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["Content-Security-Policy"] == "sandbox"
    assert ("invalid stored content type" in caplog.text) == (stored is not None)


def test_a_stored_type_is_served_normalised() -> None:
    headers = download_headers("IMAGE/PNG; name=x.html", filename=None, disposition="inline")
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == "inline"
