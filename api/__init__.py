"""The HTTP API (v1): a thin FastAPI layer over `ChatLedger`."""
