"""The SQLAlchemy integration works in a synchronous application that has no greenlet installed."""

from __future__ import annotations

import subprocess
import sys


def test_the_orm_package_does_not_import_sqlalchemys_asyncio_extension() -> None:
    # sqlalchemy.ext.asyncio needs greenlet, which `pip install granite-storage` does not bring.
    code = (
        "import sys; import granite_storage.orm, granite_storage.alembic; "
        "print('sqlalchemy.ext.asyncio' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
