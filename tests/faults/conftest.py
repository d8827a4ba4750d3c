"""Fixtures of the fault-injection suite: the SQLAlchemy test models on real databases.

The databases are those of the SQLAlchemy integration tests (``tests/orm/conftest.py``): this run's
own database on each server, created on first use and dropped at the end of the run.
"""

from __future__ import annotations

# The session-wide fixture that drops this run's databases, for the tests of this directory too.
from ..orm.conftest import _drop_scratch_databases  # noqa: F401
