"""The one request pipeline every trigger goes through, and what triggers build answers with.

`operation(...)` turns an async handler into the Functions trigger: request id, settings, token,
throttle, inputs, the answer budget, every failure to an `ApiError` (storage's included, in one
place), the JSON answer, one summary log line and the invocation's span. `record_page`, `gather`
and `page_of` build the pages the extension points answer.
"""

from shared.http._pages import Candidate, gather, page_of, record_page
from shared.http._pipeline import (
    JSON_MIMETYPE,
    ModelRef,
    Operation,
    RefusalLog,
    RequestContext,
    get_throttle,
    get_validator,
    operation,
    reset_refusal_log,
    reset_throttle,
    reset_validator,
    unavailable,
    validate_inputs,
)

__all__ = [
    "JSON_MIMETYPE",
    "Candidate",
    "ModelRef",
    "Operation",
    "RefusalLog",
    "RequestContext",
    "gather",
    "get_throttle",
    "get_validator",
    "operation",
    "page_of",
    "record_page",
    "reset_refusal_log",
    "reset_throttle",
    "reset_validator",
    "unavailable",
    "validate_inputs",
]
