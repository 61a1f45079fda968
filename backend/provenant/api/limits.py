"""Request limits every route gets, before any handler runs: body size and JSON nesting depth.

Uploads stream their own bodies against each Datanet's byte limit (api/uploads.py), so they are
exempt from the size cap here; everything else is an API call whose body fits in `max_body`.
Python's json parser recurses, so `[[[[...]]]]` a few thousand levels deep would raise
RecursionError inside the framework and surface as a 500; it is refused here with a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1_048_576
MAX_JSON_DEPTH = 64
_EXEMPT = re.compile(r"^/v1/datanets/[^/]+/uploads$")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (a linear scan, no recursion)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class RequestLimits:
    """ASGI middleware: 413 for bodies over `max_body` (declared or streamed), 400 for JSON
    nested deeper than `max_depth`. The body is read once and replayed to the app."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or _EXEMPT.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _reply(send, 413, f"request body is {declared} bytes, over the limit of {self.max_body}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _reply(send, 413, f"request body is over the limit of {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if "json" in headers.get("content-type", "") and json_depth_exceeds(body, self.max_depth):
            await _reply(send, 400, f"JSON nested deeper than {self.max_depth} levels")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
