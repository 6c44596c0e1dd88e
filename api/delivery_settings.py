"""The delivery settings as the API reads them (``ELIMU_SMS_*``, ``ELIMU_PUBLIC_URL``,
``ELIMU_PUSH_HOSTS``, the VAPID key): the same reader as ``elimu deliver``, so the API checks a
push endpoint, a provider's signature or a link against what the deliverers use. Read once per
process (settings come from the environment, which does not change under it)."""

from __future__ import annotations

from functools import lru_cache

from delivery.config import DeliveryConfig


@lru_cache(maxsize=4)
def delivery_config(api_port: int) -> DeliveryConfig:
    return DeliveryConfig.from_env(api_port)
