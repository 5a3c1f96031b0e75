"""Asking an engine for the usage of a stream whose client did not.

The proxy needs every call's usage (DESIGN.md: service is accounted from the engine's own
count), so a streamed call without ``stream_options.include_usage`` is sent with it, and the
usage-only chunk this adds is held back from the client (``StreamWatcher``). The body that
goes to the engine is then the client's bytes with the one field spliced in after the opening
brace, not the whole body encoded again: a long agent conversation costs as little as a short
one.
"""

from __future__ import annotations

from typing import Any

_ASKED = b'"stream_options":{"include_usage":true},'


def ask_usage(body: dict[str, Any], raw: bytes | None) -> tuple[dict[str, Any], bytes | None]:
    """``body`` with ``stream_options.include_usage`` set (a new dict; the client's is left as
    it is), and its bytes: ``raw`` (the encoding of ``body``) with the field spliced in, or
    None where the caller must encode the new dict (no ``raw``, or a ``stream_options`` to
    merge with)."""
    options = body.get("stream_options")
    asked = {**body, "stream_options": {**(options or {}), "include_usage": True}}
    if raw is None or "stream_options" in body or not body:
        return asked, None
    # ``raw`` encodes a JSON object: only whitespace may come before its opening brace, and
    # it has a member (``body`` is not empty), so the spliced member takes a comma after it.
    at = raw.find(b"{") + 1
    return asked, raw[:at] + _ASKED + raw[at:]
