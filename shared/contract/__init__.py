"""The wire: what Copilot for Sales and the partner's services send and receive.

Response models and the `ApiError` envelope, the error tree that maps every failure a caller can
see to its HTTP status (`shared.contract.errors`), request parameters and their one parsing rule
each, the email model, `Accept-Language` negotiation, the one spelling of values callers spell
several ways (`shared.contract.normalize`), instants, the extension points, and how a stored
insight becomes an item.
"""

from shared.contract import errors, normalize
from shared.contract._email import (
    MAX_PARTICIPANTS,
    MAX_RELATED_ENTITIES,
    EmailModel,
    EmailThreadRequest,
    RelatedEntities,
    RelatedEntity,
    participants,
)
from shared.contract._instants import InstantError, format_stored, format_utc, parse_instant
from shared.contract._items import Audience, Localizable, to_item
from shared.contract._language import choose_language, is_language_tag, parse_accept_language
from shared.contract._models import (
    BUILT_ON_FIRST_USE,
    ApiError,
    ContractModel,
    HttpsUrl,
    NonEmptyStr,
    Page,
    StringMap,
    UtcDateTime,
    wire,
)
from shared.contract._params import (
    DEFAULT_TOP,
    MAX_SKIP,
    MAX_TOP,
    CrmTypeIn,
    DateTimeIn,
    OrgUrlIn,
    RecordIdIn,
    RecordTypeIn,
    RequestModel,
    Skip,
    Top,
    top_capped_at,
)
from shared.contract._points import ExtensionPoint, PointsNotInstalled, all_points, get_point, install_points

__all__ = [
    "BUILT_ON_FIRST_USE",
    "DEFAULT_TOP",
    "MAX_PARTICIPANTS",
    "MAX_RELATED_ENTITIES",
    "MAX_SKIP",
    "MAX_TOP",
    "ApiError",
    "Audience",
    "ContractModel",
    "CrmTypeIn",
    "DateTimeIn",
    "EmailModel",
    "EmailThreadRequest",
    "ExtensionPoint",
    "HttpsUrl",
    "InstantError",
    "Localizable",
    "NonEmptyStr",
    "OrgUrlIn",
    "Page",
    "PointsNotInstalled",
    "RecordIdIn",
    "RecordTypeIn",
    "RelatedEntities",
    "RelatedEntity",
    "RequestModel",
    "Skip",
    "StringMap",
    "Top",
    "UtcDateTime",
    "all_points",
    "choose_language",
    "errors",
    "format_stored",
    "format_utc",
    "get_point",
    "install_points",
    "is_language_tag",
    "normalize",
    "parse_accept_language",
    "parse_instant",
    "participants",
    "to_item",
    "top_capped_at",
    "wire",
]
