"""Integrations with other libraries; each module imports its library, so import only the one you use.

* :mod:`granite_storage.integrations.fastapi`: uploads, downloads and error responses for FastAPI
  (``pip install "granite-storage[fastapi]"``).
* :mod:`granite_storage.integrations.sqlalchemy`: the SQLAlchemy integration
  (:mod:`granite_storage.orm`) under the import path of granite-storage 0.1.0.
"""
