"""rankloop's Python client (service/sdk/client.py)."""

from service.sdk.client import AsyncRankloop, CommandFailed, Rankloop

__all__ = ["AsyncRankloop", "CommandFailed", "Rankloop"]
