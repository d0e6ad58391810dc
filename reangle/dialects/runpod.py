"""Placeholder: the runpod dialect is being written."""

from fastapi import APIRouter

router = APIRouter()
