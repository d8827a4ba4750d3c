"""Sphinx configuration of the granite-storage documentation (built by ``make docs``)."""

from __future__ import annotations

import sys
from typing import Any

from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

import granite_storage
import granite_storage.orm

project = "granite-storage"
author = "granite-storage developers"
copyright = "granite-storage developers"
release = granite_storage.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# -- MyST ----------------------------------------------------------------------------------------------
myst_heading_anchors = 3
myst_enable_extensions = ["deflist", "substitution"]
myst_substitutions = {"release": release}

# -- autodoc and napoleon (the docstrings are Google style) -----------------------------------------------
# Every parameter's type is shown, documented or not: a plugin author reads `stream` as `Readable` and
# `older_than` as `timedelta` from the page, not from the source.
autodoc_typehints = "description"
autodoc_typehints_description_target = "all"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- HTML ------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"granite-storage {release}"

# -- Cross-references ------------------------------------------------------------------------------------
# Every reference must resolve (nitpicky), except those into the standard library and the libraries we
# build on: the docs build offline, so there is no intersphinx inventory to resolve them against.
nitpicky = True
_FOREIGN = sys.stdlib_module_names | {"pluggy", "sqlalchemy", "alembic", "anyio", "starlette", "fastapi"}
nitpick_ignore_regex = [
    ("py:.*", rf"(?:{'|'.join(sorted(_FOREIGN))})(?:\..+)?"),
    # boto3's client type, from the stubs (mypy_boto3_s3), which exist for type checkers only.
    ("py:.*", r"(?:mypy_boto3_s3|botocore|boto3)(?:\..+)?|S3Client|StreamingBody"),
    # The same libraries' names as signatures spell them, imported for type checking only, so autodoc
    # cannot qualify them (typeshed's WriteableBuffer exists for type checkers only).
    (
        "py:class",
        r"Session|sessionmaker|AsyncSession|async_sessionmaker|Engine|AsyncEngine|FastAPI|Request"
        r"|WriteableBuffer",
    ),
]


def _resolve_reexport(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Any) -> Any:
    """Resolve a public name (``granite_storage.StorageManager.get``) to where autodoc documents it.

    Docstrings and pages refer to objects by the names users import: ``granite_storage.Name``,
    ``granite_storage.orm.Name``, or a bare ``Name``, optionally followed by an attribute. autodoc
    documents each object once, in the module that defines it
    (``granite_storage.manager.StorageManager.get``).
    """
    if node.get("refdomain") != "py":
        return None
    reftarget = str(node.get("reftarget", ""))
    for package in (granite_storage.orm, granite_storage):
        target = reftarget.removeprefix(f"{package.__name__}.")
        name = target.partition(".")[0]
        if name not in package.__all__:
            continue
        module = getattr(getattr(package, name), "__module__", "")
        if not isinstance(module, str) or not module.startswith("granite_storage."):
            continue
        canonical = f"{module}.{target}"
        return env.get_domain("py").resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
        )
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_reexport)
    return {"parallel_read_safe": True}
