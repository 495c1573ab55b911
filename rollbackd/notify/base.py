"""The names ``rollbackd.notify.base`` has always offered, from the modules that now hold them.

``model`` (the Notification and its JSON form), ``channel`` (the channel
protocol and its error), ``lane`` (backoff), ``notifier`` (the outbox
worker) and ``delivery`` (sending, retries, expiry, failover).
"""

from rollbackd.durations import format_age
from rollbackd.jsonable import to_jsonable
from rollbackd.notify.channel import Channel, ChannelError, OnResult, channel_accepts
from rollbackd.notify.lane import backoff_delay
from rollbackd.notify.model import (
    DETAIL_FAILOVER_FROM,
    DETAIL_FROM_IMAGES,
    DETAIL_FROM_REVISION,
    DETAIL_PHASE,
    DETAIL_REASON,
    DETAIL_REASON_CODE,
    DETAIL_REPORT_URL,
    DETAIL_ROLLBACK_ID,
    DETAIL_TO_IMAGES,
    DETAIL_TO_REVISION,
    Notification,
    NotificationKind,
    Severity,
    notification_from_json,
    notification_to_json,
    utcnow,
)
from rollbackd.notify.notifier import Notifier

__all__ = [
    "DETAIL_FAILOVER_FROM",
    "DETAIL_FROM_IMAGES",
    "DETAIL_FROM_REVISION",
    "DETAIL_PHASE",
    "DETAIL_REASON",
    "DETAIL_REASON_CODE",
    "DETAIL_REPORT_URL",
    "DETAIL_ROLLBACK_ID",
    "DETAIL_TO_IMAGES",
    "DETAIL_TO_REVISION",
    "Channel",
    "ChannelError",
    "Notification",
    "NotificationKind",
    "Notifier",
    "OnResult",
    "Severity",
    "backoff_delay",
    "channel_accepts",
    "format_age",
    "notification_from_json",
    "notification_to_json",
    "to_jsonable",
    "utcnow",
]
