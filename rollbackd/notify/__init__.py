"""Telling humans what rollbackd did: pager, Alertmanager push, chat, generic webhook.

``Notifier`` fans a ``Notification`` out to the configured channels without
blocking the caller; each channel module builds one service's request body.
"""

from rollbackd.notify.alertmanager import AlertmanagerPushChannel
from rollbackd.notify.base import (
    Channel,
    ChannelError,
    Notification,
    NotificationKind,
    Notifier,
)
from rollbackd.notify.pagerduty import PagerDutyChannel
from rollbackd.notify.slack import SlackChannel
from rollbackd.notify.webhook import WebhookChannel

__all__ = [
    "AlertmanagerPushChannel",
    "Channel",
    "ChannelError",
    "Notification",
    "NotificationKind",
    "Notifier",
    "PagerDutyChannel",
    "SlackChannel",
    "WebhookChannel",
]
