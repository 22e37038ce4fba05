"""The error tree. Every failure a caller can see is one of these, mapped to HTTP in one place.

    ApiException                      status  errorCode
    ├── InvalidRequest                400     INVALID_REQUEST          (names the parameter)
    ├── InvalidCrmConnection          400     INVALID_CRM_CONNECTION
    ├── InvalidToken                  401     INVALID_TOKEN_SPECIFIED  (+ WWW-Authenticate: Bearer)
    ├── InsufficientPermissions       403     INSUFFICIENT_PERMISSIONS
    ├── RecordNotFound                404     RECORD_NOT_FOUND
    ├── RequestTooLarge               413     REQUEST_TOO_LARGE
    ├── RequestThrottled              429     REQUEST_THROTTLED        (+ Retry-After)
    ├── InternalServerError           500     INTERNAL_SERVER_ERROR
    │   └── ConfigurationError        500     INTERNAL_SERVER_ERROR    (detail logged, not shown)
    └── ServiceUnavailable            503     SERVICE_UNAVAILABLE      (+ Retry-After)

`message` is what the caller reads; `log_detail` is what only the log gets (why a token failed,
which setting is wrong). Anything that is not an `ApiException` becomes an InternalServerError.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ApiException",
    "ConfigurationError",
    "InsufficientPermissions",
    "InternalServerError",
    "InvalidCrmConnection",
    "InvalidRequest",
    "InvalidToken",
    "RecordNotFound",
    "RequestThrottled",
    "RequestTooLarge",
    "ServiceUnavailable",
]


class ApiException(Exception):
    status: ClassVar[int] = 500
    error_code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    default_message: ClassVar[str] = "The service could not complete the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        log_detail: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.log_detail = log_detail
        self.details = details or {}
        super().__init__(log_detail or self.message)

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ApiException):
    status = 400
    error_code = "INVALID_REQUEST"
    default_message = "The request is not valid."

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"Parameter '{parameter}' {problem}.", details={"parameter": parameter})
        self.parameter = parameter


class InvalidCrmConnection(ApiException):
    """Not raised by this backend: it is not bound to one CRM. It serves every org's insights and
    scopes them by the request's `crmOrgUrl`/`crmType` (a request naming another org is served
    that org's insights and the unscoped ones), so no request can name the wrong CRM. A deployment
    bound to a single org would raise it when a request names another."""

    status = 400
    error_code = "INVALID_CRM_CONNECTION"
    default_message = "The CRM the user is connected to differs from the one in the request."


class InvalidToken(ApiException):
    """RFC 6750 §3.1: a request that carried no bearer token (no Authorization header, another
    scheme, an empty token) gets the bare challenge; one whose token failed gets `invalid_token`."""

    status = 401
    error_code = "INVALID_TOKEN_SPECIFIED"
    default_message = "The access token is missing, invalid or expired."

    def __init__(self, *, log_detail: str | None = None, token_given: bool = True) -> None:
        super().__init__(log_detail=log_detail)
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"' if self.token_given else "Bearer"}


class InsufficientPermissions(ApiException):
    status = 403
    error_code = "INSUFFICIENT_PERMISSIONS"
    default_message = "The caller is not allowed to use this operation."


class RecordNotFound(ApiException):
    """Not raised by this backend: it holds insights about CRM records, not the records, so it
    cannot tell a record that does not exist from one it has no insight for. Both answer an empty
    page (Copilot shows no card), as the contract allows for a record without insights."""

    status = 404
    error_code = "RECORD_NOT_FOUND"
    default_message = "The CRM record was not found."


class RequestTooLarge(ApiException):
    status = 413
    error_code = "REQUEST_TOO_LARGE"
    default_message = "The request body is larger than the service accepts."


class RequestThrottled(ApiException):
    status = 429
    error_code = "REQUEST_THROTTLED"
    default_message = "Too many requests; retry later."

    def __init__(self, retry_after: int, *, log_detail: str | None = None) -> None:
        super().__init__(log_detail=log_detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InternalServerError(ApiException):
    pass


class ConfigurationError(InternalServerError):
    """A setting is missing or malformed. The caller gets a plain 500; the log names the setting."""

    def __init__(self, detail: str) -> None:
        super().__init__(log_detail=detail)


class ServiceUnavailable(ApiException):
    status = 503
    error_code = "SERVICE_UNAVAILABLE"
    default_message = "The insights store is unavailable; retry shortly."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int = 5,
        log_detail: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, log_detail=log_detail, details=details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
