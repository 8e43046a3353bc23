"""Third-party CTI over HTTP (DESIGN.md section 5): commands, snapshots and event delivery.

`Cti` builds the aiohttp sub-application served under /api/v1 by `cms serve`;
its routes and request validation come from the OpenAPI document in `schema`.
"""

from .app import PREFIX, Cti
from .auth import Principal, Sessions
from .errors import ApiError
from .schema import OPENAPI

__all__ = ["OPENAPI", "PREFIX", "ApiError", "Cti", "Principal", "Sessions"]
