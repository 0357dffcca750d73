"""tierproxy: asyncio proxy daemons. Importing the package installs the native layer's finder
(proxy/_native.py), which picks the compiled or pure twin of each hot module."""

from proxy import _native

_native.install()
