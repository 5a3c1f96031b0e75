"""Domain errors. Each carries an HTTP status and an OpenAI error ``type``; the one error
middleware (``proxy.middleware``) turns them into ``{"error": {...}}`` JSON. Nothing else
builds error responses."""

from __future__ import annotations


class ProxyError(Exception):
    """Base class: an error the client should see in the OpenAI error shape."""

    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(ProxyError):
    """The client's request is malformed or has a field of the wrong type or value."""

    status = 400
    type = "invalid_request_error"


class Unauthorized(ProxyError):
    status = 401
    type = "authentication_error"


class Forbidden(ProxyError):
    """The client's key may not do this."""

    status = 403
    type = "permission_error"


class NotFound(ProxyError):
    """Unknown model, route or record."""

    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    """A model no engine serves. OpenAI types it as a bad request (404, code
    ``model_not_found``), and its SDKs and clients match on that type, not on the status."""

    type = "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="model_not_found")


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"


class BadGateway(ProxyError):
    """An engine could not be reached or answered with something that is not HTTP."""

    status = 502
    type = "upstream_error"


class ServiceUnavailable(ProxyError):
    """No engine that serves the model is healthy, or the proxy is shutting down."""

    status = 503
    type = "service_unavailable"


class GatewayTimeout(ProxyError):
    status = 504
    type = "upstream_timeout"


class ClientClosedRequest(ProxyError):
    """The client went away before its answer was written (nginx's 499): an answer nobody
    reads, given only where a write found the connection closing."""

    status = 499
    type = "client_closed_request"


class ConfigError(Exception):
    """Bad configuration or plug-in; raised at start-up, never while serving."""
