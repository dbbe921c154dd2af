"""A stub OpenAI-compatible server for measuring what sits in front of a model server: it streams
prepared chunks at a fixed rate per stream and computes nothing, so the relay under test, not an
engine sharing its cores, is what the bench sees.

    python -m bench.stub_upstream --port 8100 [--rate 20]

Routes: GET /health, GET /v1/models (one model, `stub`), POST /v1/chat/completions (streamed or
whole; `max_tokens` chunks of one token each, then the usage chunk and `[DONE]`), POST /v1/completions
(whole; what a deploy's test generation sends).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

TOKEN = " tok"


def chunk(i: int) -> bytes:
    body = {
        "id": "stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": {"content": TOKEN}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


CHUNK = chunk(0)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def app(rate: float) -> web.Application:
    interval = 1.0 / rate

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        if not body.get("stream"):
            await asyncio.sleep(interval * n)
            return web.json_response(
                {
                    "id": "stub",
                    "object": "chat.completion",
                    "model": "stub",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": TOKEN * n},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": usage(prompt, n),
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = time.monotonic()
        for i in range(n):  # on a fixed schedule, so a slow reader does not slow the rate it is offered
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
            await resp.write(CHUNK)
        tail = {
            "id": "stub",
            "object": "chat.completion.chunk",
            "model": "stub",
            "choices": [],
            "usage": usage(prompt, n),
        }
        await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(request: web.Request) -> web.Response:  # what a deploy's test generation asks
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        return web.json_response(
            {
                "id": "stub",
                "object": "text_completion",
                "model": "stub",
                "choices": [{"index": 0, "text": TOKEN * n, "finish_reason": "length"}],
                "usage": usage(1, n),
            }
        )

    a = web.Application()
    a.router.add_get("/health", health)
    a.router.add_get("/v1/models", models)
    a.router.add_post("/v1/chat/completions", chat)
    a.router.add_post("/v1/completions", completions)
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="tokens per second per stream")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app(args.rate), host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
