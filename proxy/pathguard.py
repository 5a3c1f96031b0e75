"""The pass-through's door: which /v1 paths may be forwarded to an engine, in which form.

An engine's private routes (``/abort_requests``, ``/load_lora_adapter``, the simulated
engine's ``/sim/state``) sit next to its OpenAI routes, so the proxy forwards an allowlist of
OpenAI routes only. The path is decoded once and must then be plain: no dot segments, no
empty segments, no backslash and nothing still percent-encoded (double encoding) or an encoded
slash, whatever the engine's own server would make of it. What is forwarded is the path as
checked, re-encoded, never the raw bytes the client sent.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from proxy.errors import BadRequest, NotFound

PREFIX = "/v1/"


class RouteAllowlist:
    """Patterns relative to /v1: literal segments, ``*`` for one segment, a trailing ``**``
    for one or more."""

    __slots__ = ("_patterns",)

    def __init__(self, patterns: list[str] | tuple[str, ...]) -> None:
        self._patterns = tuple(tuple(p.strip("/").split("/")) for p in patterns if p.strip("/"))

    def allows(self, segments: list[str]) -> bool:
        return any(_match(pattern, segments) for pattern in self._patterns)


def _match(pattern: tuple[str, ...], segments: list[str]) -> bool:
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(segments) > len(head) and all(
            p in ("*", s) for p, s in zip(head, segments, strict=False)
        )
    return len(pattern) == len(segments) and all(
        p in ("*", s) for p, s in zip(pattern, segments, strict=True)
    )


def checked_path(raw_path: str, allowlist: RouteAllowlist) -> str:
    """The path to forward for a client's raw request path (without query), or an error:
    400 for a path that tries to leave its route, 404 for a route not on the allowlist."""
    lowered = raw_path.lower()
    if "\\" in raw_path or "%5c" in lowered or "%2f" in lowered or "%00" in lowered:
        raise _traversal(raw_path)
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise _traversal(raw_path) from None
    if "%" in path or "\\" in path or "\x00" in path:
        raise _traversal(raw_path)
    if not path.startswith(PREFIX):
        raise _not_forwarded(raw_path)
    segments = path[len(PREFIX) :].split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise _traversal(raw_path)
    if not allowlist.allows(segments):
        raise _not_forwarded(raw_path)
    return PREFIX + "/".join(quote(s, safe="") for s in segments)


def _traversal(raw: str) -> BadRequest:
    return BadRequest(
        f"path {raw[:200]!r} is not a plain /v1 route (dot or empty segments, encoded slashes "
        "or backslashes, or double encoding)",
        param="path",
        code="invalid_path",
    )


def _not_forwarded(raw: str) -> NotFound:
    return NotFound(f"no route {raw[:200]}", code="route_not_found")
