"""The delivery services (``elimu deliver``): EMAIL, PUSH and SMS sends of the `notifications`
topic, each channel behind ``delivery.channels.Channel`` (docs/notifications.md)."""
