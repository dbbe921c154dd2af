"""The base of every command-table row's parameters: unknown fields are refused, naming them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
