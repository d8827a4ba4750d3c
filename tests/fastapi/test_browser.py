"""Downloads in a real browser: headless Chromium (Debian's package) driven by Playwright.

An uploaded page that runs script on the application's origin can act with its users' cookies. The
pages stored here try: their script sets a cookie and a ``localStorage`` entry of the origin it runs
on, which the test reads back from a page of the application. A control endpoint serves the same page
without protection, to show that the check sees a script that runs.

Skipped where Playwright or Chromium is missing, unless ``GRANITE_TEST_REQUIRE_BROWSER=1`` (set by
CI), which makes that a failure. ``GRANITE_TEST_CHROMIUM`` names another Chromium than
``/usr/bin/chromium``. Playwright's own browser downloads (``playwright install``) are never used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.responses import Response

from granite_storage import PluginHost, StorageManager, StoragePolicy, StoredObjectRef
from granite_storage_local import LocalStorageBackend

from ..samples import HTML, SVG, png
from .conftest import serve
from .service import Service, build_service

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REQUIRE_ENV = "GRANITE_TEST_REQUIRE_BROWSER"
CHROMIUM = Path(os.environ.get("GRANITE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE_TYPE = "image/png; x=y, text/html"
SAFETY_HEADERS = ("content-type", "content-disposition", "content-security-policy", "x-content-type-options")


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the system's package, for the module."""
    if importlib.util.find_spec("playwright") is None:
        skip_or_fail("the playwright package is not installed (it is in the dev dependency group)")
    if not CHROMIUM.is_file():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def service(local_backend: LocalStorageBackend, empty_host: PluginHost) -> Service:
    policy = StoragePolicy("files", backend_key="local")
    manager = StorageManager(
        backends={"local": local_backend}, policies={"files": policy}, plugins=empty_host
    )
    service = build_service(manager)

    @service.app.get("/page")
    async def page() -> Response:
        """A page of the application itself, from which the test reads what a script left."""
        return Response(b"<!doctype html><title>app</title>", media_type="text/html")

    @service.app.get("/unprotected")
    async def unprotected() -> Response:
        """The control: the hostile page served as HTML with none of the download headers."""
        return Response(HTML, headers={"Content-Type": HOSTILE_TYPE, "Content-Disposition": "inline"})

    return service


@pytest.fixture
def base_url(service: Service) -> Iterator[str]:
    with serve(service.app) as url:
        yield url


def store(service: Service, name: str, content: bytes, content_type: str, filename: str) -> StoredObjectRef:
    manager = service.app.state.granite_storage_manager
    assert isinstance(manager, StorageManager)
    ref = manager.put_bytes(
        storage_key="files",
        model_name="test",
        entity_id=name,
        field_name="file",
        content=content,
        content_type=content_type,
        original_filename=filename,
    )
    service.refs[name] = ref
    return ref


@dataclass
class Visit:
    """What the browser received for one navigation, and what a script could have left behind."""

    headers: dict[str, str]
    downloaded: bool
    document_type: str | None
    script_ran: bool


def visit(browser: Browser, base_url: str, path: str) -> Visit:
    """Open ``path`` in a fresh browser context, then look at the application's origin from its page."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        url = f"{base_url}{path}"
        downloaded = False
        with page.expect_response(lambda response: response.url == url) as received:
            try:
                page.goto(url)
            except PlaywrightError as exc:
                if "Download is starting" not in str(exc):
                    raise
                downloaded = True
        headers = {
            name: value for name, value in received.value.all_headers().items() if name in SAFETY_HEADERS
        }
        document_type = None if downloaded else page.evaluate("document.contentType")
        page.goto(f"{base_url}/page")
        stored = page.evaluate("localStorage.getItem('script_ran')")
        cookies = [cookie["name"] for cookie in context.cookies()]
        return Visit(headers, downloaded, document_type, stored is not None or "script_ran" in cookies)
    finally:
        context.close()


def test_the_control_page_runs_its_script_on_the_applications_origin(browser: Browser, base_url: str) -> None:
    # Served as it came, the list of types reads as HTML to the browser: the check sees the script.
    seen = visit(browser, base_url, "/unprotected")
    assert seen.document_type == "text/html"
    assert seen.script_ran


def test_an_upload_from_the_browser_claiming_a_list_of_types_is_refused(
    browser: Browser, base_url: str, service: Service
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/page")
        status = page.evaluate(
            """async ([body, type]) => {
                const form = new FormData();
                form.append("file", new Blob([body], {type}), "cat.png");
                return (await fetch("/uploads/cat", {method: "POST", body: form})).status;
            }""",
            [HTML.decode(), HOSTILE_TYPE],
        )
    finally:
        context.close()
    assert status == 400
    assert "cat" not in service.refs


def test_a_reference_from_before_holding_a_list_of_types_downloads_and_runs_nothing(
    browser: Browser, base_url: str, service: Service
) -> None:
    # A row an older release wrote, with the client's type as it came.
    ref = store(service, "legacy", HTML, "text/plain", "cat.png")
    service.refs["legacy"] = dataclasses.replace(ref, content_type=HOSTILE_TYPE)
    seen = visit(browser, base_url, "/objects/legacy?inline=true")
    assert seen.headers == {
        "content-type": "application/octet-stream",
        "content-disposition": "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png",
        "content-security-policy": "sandbox",
        "x-content-type-options": "nosniff",
    }
    assert seen.downloaded
    assert not seen.script_ran


@pytest.mark.parametrize(
    ("content", "content_type", "filename"),
    [(HTML, "text/html", "page.html"), (SVG, "image/svg+xml", "drawing.svg"), (HTML, "text/xml", "a.xml")],
    ids=["html", "svg", "xml"],
)
def test_a_document_that_can_run_script_asked_inline_downloads_sandboxed_and_runs_nothing(
    browser: Browser, base_url: str, service: Service, content: bytes, content_type: str, filename: str
) -> None:
    store(service, "doc", content, content_type, filename)
    seen = visit(browser, base_url, "/objects/doc?inline=true")
    assert seen.headers["content-type"] == content_type
    assert seen.headers["content-disposition"].startswith("attachment;")
    assert seen.headers["content-security-policy"] == "sandbox"
    assert seen.headers["x-content-type-options"] == "nosniff"
    assert seen.downloaded
    assert not seen.script_ran


def test_html_claimed_as_an_image_is_shown_as_an_image_and_runs_nothing(
    browser: Browser, base_url: str, service: Service
) -> None:
    # A slot without content rules stores the client's claim; nosniff keeps the browser to it.
    store(service, "lie", HTML, "image/png", "cat.png")
    seen = visit(browser, base_url, "/objects/lie?inline=true")
    assert seen.headers["content-type"] == "image/png"
    assert seen.headers["x-content-type-options"] == "nosniff"
    assert seen.document_type == "image/png"
    assert not seen.script_ran


def test_a_passive_image_asked_inline_is_shown_inline(
    browser: Browser, base_url: str, service: Service
) -> None:
    store(service, "image", png(), "image/png", "dot.png")
    seen = visit(browser, base_url, "/objects/image?inline=true")
    expected: dict[str, Any] = {
        "content-type": "image/png",
        "content-disposition": "inline; filename=\"dot.png\"; filename*=UTF-8''dot.png",
        "x-content-type-options": "nosniff",
    }
    assert seen.headers == expected
    assert not seen.downloaded
    assert seen.document_type == "image/png"
