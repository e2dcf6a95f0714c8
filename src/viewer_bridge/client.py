"""The Python client's documented import path: ``from viewer_bridge.client import ViewerClient``.

The implementation lives in :mod:`viewer_bridge.clients.client`.
"""

from viewer_bridge.clients.client import *  # noqa: F403
from viewer_bridge.clients.client import __all__  # noqa: F401
