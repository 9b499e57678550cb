"""The HTTP face of voxgate (FastAPI). Only this package knows HTTP status codes."""
