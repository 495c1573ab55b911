"""Telling humans what rollbackd did: pager, Alertmanager push, chat, generic webhook.

``Notifier`` fans a ``Notification`` out to the configured channels without
blocking the caller; each channel module builds one service's request body.
"""

from rollbackd.notify.alertmanager import AlertmanagerPushChannel
from rollbackd.notify.channel import Channel, ChannelError
from rollbackd.notify.model import Notification, NotificationKind
from rollbackd.notify.notifier import Notifier
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
