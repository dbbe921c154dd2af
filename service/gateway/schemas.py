"""What the gateway checks in a request before it proxies it, and its error shape.

Only what the gateway itself needs is validated here (the route, limits, our `system_prompt`
field); every other OpenAI field passes through to vLLM, which validates it and answers in the
same error shape.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class GatewayError(Exception):
    """An OpenAI-style error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = (
            {"Retry-After": str(max(1, round(self.retry_after)))} if self.retry_after is not None else None
        )
        return JSONResponse(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}},
            status_code=self.status,
            headers=headers,
        )


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(
        min_length=1, max_length=200, description="a route: `current` or a deployed model's name"
    )
    n: int = Field(1, ge=1, description="choices to generate")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    user: str | None = Field(
        None, max_length=256, description="end-user id: canary and arm assignment stick to it"
    )


class ChatRequest(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    system_prompt: str | None = Field(
        None, max_length=200, description="a stored system prompt's name (rankloop)"
    )


class CompletionRequest(_Common):
    prompt: str | list[Any]


def parse(model: type[_Common], body: Any, max_n: int, max_tokens: int) -> _Common:
    """The request, or a 400 naming the field and what is valid."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise GatewayError(400, f"{field}: {err['msg']}", param=field) from None
    if req.n > max_n:
        raise GatewayError(
            400, f"n = {req.n} is over this server's limit of {max_n} (setting gateway.max_n)", param="n"
        )
    for field in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, field)
        if value is not None and value > max_tokens:
            raise GatewayError(
                400,
                f"{field} = {value} is over this server's limit of {max_tokens} (setting gateway.max_tokens)",
                param=field,
            )
    return req
