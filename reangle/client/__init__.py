"""The reangle Python SDK: `Client` and `AsyncClient` for a reangle server's native API (/v1).

It needs only httpx and pydantic, and imports nothing else from reangle, so it works without torch or a GPU:

    from reangle.client import Client

    with Client("http://localhost:8000", api_key="...") as client:
        job = client.edit("photo.jpg", horizontal_angle=90)
        client.download(job.assets[0], "side.png")
        job = client.generate("a lighthouse at dusk", size="1K", rewrite_prompt=True)
        client.download(job.assets[0], "lighthouse.png")
"""

from reangle.client._async_client import AsyncClient
from reangle.client._base import ProgressCallback
from reangle.client._client import Client
from reangle.client._errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidAPIKeyError,
    InvalidResponseError,
    InvalidServerURLError,
    JobCanceled,
    JobFailed,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ReangleAPIError,
    ReangleClientError,
    ServerError,
    UnsupportedMediaTypeError,
    WaitTimeout,
)
from reangle.client._inputs import (
    CAMERA_MODEL,
    INSTRUCTION_MODEL,
    TEXT_TO_IMAGE_MODEL,
    WAN_IMAGE_MODEL,
    FileInput,
    ImageInput,
    Lora,
    LoraInput,
    TimeLimitsInput,
)
from reangle.client._models import (
    TERMINAL_STATUSES,
    Asset,
    Batch,
    CameraPrompt,
    Health,
    Job,
    JobError,
    JobEvent,
    JobOutput,
    JobPage,
    Model,
    OutputAsset,
    ProgressEvent,
    PromptRewrite,
    TimeLimits,
    ViewPose,
    WebhookSecret,
)

__all__ = [
    "CAMERA_MODEL",
    "INSTRUCTION_MODEL",
    "TERMINAL_STATUSES",
    "TEXT_TO_IMAGE_MODEL",
    "WAN_IMAGE_MODEL",
    "APIConnectionError",
    "Asset",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "CameraPrompt",
    "Client",
    "ConflictError",
    "FileInput",
    "Health",
    "ImageInput",
    "InvalidAPIKeyError",
    "InvalidResponseError",
    "InvalidServerURLError",
    "Job",
    "JobCanceled",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobOutput",
    "JobPage",
    "Lora",
    "LoraInput",
    "Model",
    "NotFoundError",
    "OutputAsset",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProgressCallback",
    "ProgressEvent",
    "PromptRewrite",
    "RateLimitError",
    "ReangleAPIError",
    "ReangleClientError",
    "ServerError",
    "TimeLimits",
    "TimeLimitsInput",
    "UnsupportedMediaTypeError",
    "ViewPose",
    "WaitTimeout",
    "WebhookSecret",
]
