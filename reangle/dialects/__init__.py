"""Provider-compatible APIs, each under its own prefix so that routes never collide:
/scenario/v1, /segmind/v1 and /segmind/v2, /runpod/v2/{endpoint_id}, /openai/v1.

Each dialect module exposes `router`, an APIRouter whose paths carry its prefix.
"""

from __future__ import annotations

from fastapi import APIRouter

from reangle.dialects import openai_images, runpod, scenario, segmind


def dialect_routers() -> list[APIRouter]:
    return [scenario.router, segmind.router, runpod.router, openai_images.router]
