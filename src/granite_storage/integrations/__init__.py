"""Integrations with web frameworks; each module imports its framework, so import only the one you use.

* :mod:`granite_storage.integrations.fastapi`: uploads, downloads and error responses for FastAPI
  (``pip install "granite-storage[fastapi]"``).
"""
