"""Remote providers: models reangle cannot run on the user's own hardware (closed weights), reached through
the vendor's API with the operator's key. The engine side (jobs, assets, progress) stays reangle's own."""

from reangle.remote.dashscope import (
    DashScopeClient,
    DashScopeConfig,
    ResultImage,
    TaskResult,
    TaskUpdate,
)
from reangle.remote.dashscope_body import WanImageRequest, body_from_scenario, request_from_scenario
from reangle.remote.dashscope_errors import DashScopeAPIError
from reangle.remote.errors import ContentRefused, ProviderConfigError

__all__ = [
    "ContentRefused",
    "DashScopeAPIError",
    "DashScopeClient",
    "DashScopeConfig",
    "ProviderConfigError",
    "ResultImage",
    "TaskResult",
    "TaskUpdate",
    "WanImageRequest",
    "body_from_scenario",
    "request_from_scenario",
]
