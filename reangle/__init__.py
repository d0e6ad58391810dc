"""reangle: re-photograph an image from another camera angle, on your own GPU.

Importing this package never imports torch; the real engine loads it lazily. `Client` and `AsyncClient`
raise the errors of `reangle.client` (all `ReangleClientError`); the errors here are those of reangle run in
process (the engine, the CLI without a server), which the clients never raise.
"""

from reangle.client import AsyncClient, Client
from reangle.core.camera import CameraPose
from reangle.errors import Canceled, EngineError, InvalidImage, InvalidInput, LoraLoadError, ReangleError

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "CameraPose",
    "Canceled",
    "Client",
    "EngineError",
    "InvalidImage",
    "InvalidInput",
    "LoraLoadError",
    "ReangleError",
    "__version__",
]
