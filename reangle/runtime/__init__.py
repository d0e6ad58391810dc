"""Runners that take queued jobs to the engine: the embedded in-process one for now."""
