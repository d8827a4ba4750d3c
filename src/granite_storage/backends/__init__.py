"""Import paths kept from granite-storage 0.1.0 for the backends, now shipped as plugins.

``granite_storage.backends.local`` and ``granite_storage.backends.s3`` re-export the plugin classes, and
raise an :class:`ImportError` naming the pip command when the plugin is not installed.
"""
