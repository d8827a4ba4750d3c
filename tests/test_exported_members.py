"""The public surface: ``__all__`` tells the truth, and everything public carries a docstring."""

from __future__ import annotations
import __future__

import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pluggy
import pytest

import granite_storage
import granite_storage_local


def public_modules(package: ModuleType) -> Iterator[str]:
    """The package and every module below it whose dotted name has no ``_``-prefixed part."""
    yield package.__name__
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not any(part.startswith("_") for part in module.name.split(".")):
            yield module.name


def s3_plugin_installed() -> bool:
    return importlib.util.find_spec("granite_storage_s3") is not None


def importable_modules() -> list[str]:
    names = [*public_modules(granite_storage), *public_modules(granite_storage_local)]
    if s3_plugin_installed():
        import granite_storage_s3

        names += public_modules(granite_storage_s3)
    # The 0.1.0 import path of the S3 backend raises ImportError without its plugin
    # (tests/test_import_paths.py checks that).
    return [name for name in names if name != "granite_storage.backends.s3" or s3_plugin_installed()]


MODULES = importable_modules()


def test_the_walk_finds_the_modules_it_should() -> None:
    expected = {
        "granite_storage",
        "granite_storage.backend",
        "granite_storage.backends",
        "granite_storage.backends.local",
        "granite_storage.config",
        "granite_storage.headers",
        "granite_storage.errors",
        "granite_storage.integrations",
        "granite_storage.integrations.fastapi",
        "granite_storage.integrations.sqlalchemy",
        "granite_storage.hookspecs",
        "granite_storage.keys",
        "granite_storage.orm",
        "granite_storage.orm.content",
        "granite_storage.orm.queries",
        "granite_storage.orm.tracking",
        "granite_storage.orm.types",
        "granite_storage.manager",
        "granite_storage.plugins",
        "granite_storage.policy",
        "granite_storage.refs",
        "granite_storage.streams",
        "granite_storage.testing",
        "granite_storage_local",
        "granite_storage_local.backend",
        "granite_storage_local.hooks",
    }
    assert expected <= set(MODULES)


# -- __all__ ----------------------------------------------------------------------------------------


def test_all_lists_exactly_the_public_names_of_the_package() -> None:
    exported = {
        name
        for name, value in vars(granite_storage).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and not isinstance(value, __future__._Feature)
    }
    lazy = granite_storage._ORM_NAMES  # the SQLAlchemy integration, imported on first use
    assert sorted(granite_storage.__all__) == sorted(exported | lazy | {"__version__"})


def test_the_lazy_names_resolve_to_the_orm_package() -> None:
    import granite_storage.orm

    for name in granite_storage._ORM_NAMES:
        assert getattr(granite_storage, name) is getattr(granite_storage.orm, name)
    assert set(dir(granite_storage)) >= granite_storage._ORM_NAMES


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'StoredContentMixn'"):
        _ = granite_storage.StoredContentMixn  # type: ignore[attr-defined]  # mypy refuses it too


def test_the_seeds_sqlalchemy_names_are_exported_lazily() -> None:
    import granite_storage.orm

    assert granite_storage.portable_storage_ref_type is granite_storage.orm.portable_storage_ref_type
    assert granite_storage.StorageJSONType is granite_storage.orm.StorageJSONType


# One mypy run checks every snippet (it takes seconds: SQLAlchemy's stubs are analysed once).
TYPED_SNIPPETS = {
    "misspelt_core.py": "from granite_storage import StoredContentMixn\n",
    "misspelt_attribute.py": "import granite_storage\n\ngranite_storage.track_storag\n",
    "misspelt_s3.py": "from granite_storage_s3 import S3StorageBakend\n",
    "lazy_names.py": (
        "from granite_storage import StorageJSONType, StoredContentMixin, portable_storage_ref_type\n"
        "from granite_storage_s3 import S3StorageBackend\n"
        "reveal_type(portable_storage_ref_type())\n"
    ),
}


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mypy import api

    directory = tmp_path_factory.mktemp("typed")
    for name, text in TYPED_SNIPPETS.items():
        (directory / name).write_text(text)
    options = ["--strict", "--no-error-summary", "--cache-dir", str(directory / ".mypy_cache")]
    stdout, stderr, _ = api.run([*options, *(str(directory / name) for name in TYPED_SNIPPETS)])
    assert stderr == ""
    return stdout


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("misspelt_core.py", 'Module "granite_storage" has no attribute "StoredContentMixn"'),
        ("misspelt_attribute.py", 'Module has no attribute "track_storag"'),
        ("misspelt_s3.py", 'Module "granite_storage_s3" has no attribute "S3StorageBakend"'),
    ],
)
def test_mypy_refuses_a_misspelt_name_of_a_lazily_importing_package(
    mypy_output: str, snippet: str, message: str
) -> None:
    assert any(f"{snippet}:" in line and message in line for line in mypy_output.splitlines())


def test_mypy_sees_the_types_of_the_lazy_names(mypy_output: str) -> None:
    lines = [line for line in mypy_output.splitlines() if "lazy_names.py" in line]
    assert len(lines) == 1, lines  # the reveal_type note, and no error
    assert 'Revealed type is "sqlalchemy.sql.type_api.TypeEngine[Any]"' in lines[0]


def test_importing_the_package_does_not_import_the_orm() -> None:
    code = "import sys, granite_storage; print('sqlalchemy.orm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_importing_the_package_and_its_orm_does_not_import_fastapi() -> None:
    frameworks = "{'fastapi', 'starlette', 'anyio'}"
    code = f"import sys, granite_storage.orm; print(sorted({frameworks} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_all_has_no_duplicates() -> None:
    assert len(granite_storage.__all__) == len(set(granite_storage.__all__))


def test_version_is_0_2_0() -> None:
    assert granite_storage.__version__ == "0.2.0"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_name_in_a_modules_all_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", []):
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which it lacks"


def test_the_local_plugin_exports_its_backend() -> None:
    assert granite_storage_local.__all__ == ["LocalStorageBackend"]


# -- docstrings -------------------------------------------------------------------------------------


def public_names(module: ModuleType) -> list[str]:
    """``__all__``, or else the names without a leading underscore that the module itself defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def own_docstring(obj: object) -> str | None:
    doc = obj.__doc__  # not inherited: a class without a docstring has __doc__ None
    if not isinstance(doc, str) or not doc.strip():
        return None
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return None  # the signature dataclasses write when a class has no docstring
    return doc


def undocumented_members(cls: type) -> list[str]:
    missing = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if cls.__module__ == "granite_storage.testing" and name.startswith("test_"):
            continue  # the conformance suite's tests are named for the behaviour they check
        function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        is_api = inspect.isfunction(function) or isinstance(function, property)
        if is_api and own_docstring(function) is None:
            missing.append(f"{cls.__qualname__}.{name}")
    return missing


def is_documented_constant(module: ModuleType, name: str) -> bool:
    """A constant is documented by a ``#:`` comment above it, or in its module's docstring."""
    value = getattr(module, name)
    doc = module.__doc__ or ""
    if name in doc or (isinstance(value, str) and value in doc):
        return True
    source = inspect.getsource(module)
    return re.search(rf"^#:.*\n{re.escape(name)}\b", source, re.MULTILINE) is not None


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_module_has_a_docstring(module_name: str) -> None:
    assert own_docstring(importlib.import_module(module_name)) is not None


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = []
    for name in public_names(module):
        value = getattr(module, name)
        if inspect.isclass(value):
            if own_docstring(value) is None:
                missing.append(name)
            missing.extend(undocumented_members(value))
        elif inspect.isroutine(value) or isinstance(value, ModuleType):
            if own_docstring(value) is None:
                missing.append(name)
        elif isinstance(value, pluggy.HookimplMarker):
            continue  # checked on its own below
        elif not name.startswith("__") and not is_documented_constant(module, name):
            missing.append(name)
    assert missing == []


def test_the_public_hookimpl_marker_is_documented() -> None:
    assert is_documented_constant(granite_storage._markers, "hookimpl") or is_documented_constant(
        granite_storage, "hookimpl"
    )
