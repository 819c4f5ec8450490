"""The catalogue of Adjust placeholders: canonical names and how each is typed.

Every name here is a canonical field of the callback record. Anything a request
carries that maps to none of them is the customer's own data and is kept verbatim.
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    """How a canonical field's wire value is normalised."""

    STRING = "string"
    DEVICE_ID = "device_id"
    TIMESTAMP = "timestamp"  # Unix seconds
    TIMESTAMP_MILLI = "timestamp_milli"  # Unix milliseconds
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLAG = "flag"  # 1/0
    CURRENCY = "currency"
    COUNTRY = "country"
    JSON_OBJECT = "json_object"
    ENVIRONMENT = "environment"
    ACTIVITY_KIND = "activity_kind"


# Activity kinds this project treats as first-class; others are accepted as sent.
CORE_ACTIVITY_KINDS = frozenset({"install", "session", "event", "reattribution"})

KNOWN_ACTIVITY_KINDS = CORE_ACTIVITY_KINDS | frozenset(
    {
        "rejected_install",
        "rejected_reattribution",
        "click",
        "impression",
        "uninstall",
        "reinstall",
        "reattribution_reinstall",
        "install_update",
        "reattribution_update",
        "att_update",
        "ad_revenue",
        "cost_updated",
        "sk_install",
        "sk_event",
        "sk_cv_update",
        "sk_qualifier",
        "subscription",
        "gdpr_forget_device",
    }
)

# Device identifiers a callback may carry (KEY_FIELDS below picks the partition key).
DEVICE_ID_FIELDS: tuple[str, ...] = (
    "adid",
    "gps_adid",
    "idfa",
    "idfv",
    "oaid",
    "fire_adid",
    "android_id",
    "gps_adid_md5",
    "idfa_md5",
    "idfa_upper",
)

# Ids that identify a device on their own, in order of preference for the partition key
# (hashed variants can be constants, e.g. the hash of an all-zero IDFA).
KEY_FIELDS: tuple[str, ...] = (
    "adid",
    "gps_adid",
    "idfa",
    "idfv",
    "oaid",
    "fire_adid",
    "android_id",
)


def device_key(device: dict[str, str]) -> str | None:
    """The id that keeps one device's activities together: adid, else an advertising id."""
    return next((device[name] for name in KEY_FIELDS if name in device), None)


_STRING_FIELDS = (
    # app
    "app_id",
    "app_name",
    "app_version",
    "store",
    "sdk_version",
    # activity
    "random",
    "nonce",
    # attribution
    "tracker",
    "link_token",
    "tracker_name",
    "link_name",
    "network_name",
    "campaign_name",
    "adgroup_name",
    "creative_name",
    "first_tracker",
    "last_tracker",
    "last_tracker_name",
    "match_type",
    "rejection_reason",
    "label",
    "deeplink",
    "attribution_expires_at",
    # device and geo
    "ip_address",
    "user_agent",
    "region",
    "city",
    "postal_code",
    "language",
    "device_name",
    "device_type",
    "device_manufacturer",
    "os_name",
    "os_version",
    "timezone",
    "att_status",
    "isp",
    "connection_type",
    # event
    "event",
    "event_name",
)

FIELD_KINDS: dict[str, Kind] = {
    **dict.fromkeys(DEVICE_ID_FIELDS, Kind.DEVICE_ID),
    **dict.fromkeys(_STRING_FIELDS, Kind.STRING),
    "activity_kind": Kind.ACTIVITY_KIND,
    "environment": Kind.ENVIRONMENT,
    "created_at": Kind.TIMESTAMP,
    "created_at_milli": Kind.TIMESTAMP_MILLI,
    "installed_at": Kind.TIMESTAMP,
    "reattributed_at": Kind.TIMESTAMP,
    "click_time": Kind.TIMESTAMP,
    "impression_time": Kind.TIMESTAMP,
    "engagement_time": Kind.TIMESTAMP,
    "last_session_time": Kind.TIMESTAMP,
    "is_organic": Kind.FLAG,
    "impression_based": Kind.FLAG,
    "is_reattributed": Kind.FLAG,
    "tracking_enabled": Kind.FLAG,
    "tracking_limited": Kind.FLAG,
    "conversion_duration": Kind.INTEGER,
    "click_attribution_window": Kind.INTEGER,
    "impression_attribution_window": Kind.INTEGER,
    "reattribution_attribution_window": Kind.INTEGER,
    "inactive_user_definition": Kind.INTEGER,
    "session_count": Kind.INTEGER,
    "lifetime_session_count": Kind.INTEGER,
    "time_spent": Kind.INTEGER,
    "revenue": Kind.DECIMAL,
    "revenue_float": Kind.DECIMAL,
    "revenue_usd": Kind.DECIMAL,
    "reporting_revenue": Kind.DECIMAL,
    "currency": Kind.CURRENCY,
    "reporting_currency": Kind.CURRENCY,
    "country": Kind.COUNTRY,
    "partner_parameters": Kind.JSON_OBJECT,
    "publisher_parameters": Kind.JSON_OBJECT,
}

CANONICAL_FIELDS = frozenset(FIELD_KINDS)
