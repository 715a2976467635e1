"""The HTTP service: FastAPI app, persistent job store, executor, limits, auth."""
