"""Placeholder: the segmind dialect is being written."""

from fastapi import APIRouter

router = APIRouter()
