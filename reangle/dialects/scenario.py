"""Placeholder: the scenario dialect is being written."""

from fastapi import APIRouter

router = APIRouter()
