"""HTTP: the FastAPI app, the native /v1 API, auth, signed download links and metrics."""
