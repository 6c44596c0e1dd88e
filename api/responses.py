"""The JSON response class used by every route.

FastAPI deprecated its ``ORJSONResponse``; subclassing Starlette's ``JSONResponse`` keeps orjson
(fast, and it serialises the raw documents we read from Redis without a pydantic round trip).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
