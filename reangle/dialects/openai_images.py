"""Placeholder: the openai_images dialect is being written."""

from fastapi import APIRouter

router = APIRouter()
