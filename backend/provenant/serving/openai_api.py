"""OpenAI-compatible completions and chat completions (with SSE streaming), paid by voucher or x402.

Decoding is greedy (temperature and top_p are accepted and ignored, so unchanged clients work);
features we do not implement (n > 1, stop sequences, logprobs, echo, tools) are refused with 400
rather than silently dropped. An unpaid call gets HTTP 402 in the x402 v2 format (serving/x402.py);
an x402-paid call is settled once answered (streaming: before the first chunk) and answered with
PAYMENT-RESPONSE. Every answer carries `provenance`: the signed receipt (in the last
chunk before `data: [DONE]` when streaming), which OpenAI clients ignore and keep in `model_extra`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from provenant.payments.vouchers import PaymentRequired
from provenant.payments.x402_facilitator import X402NotAvailable
from provenant.serving import x402 as x402_http
from provenant.serving.api_keys import bearer_key
from provenant.serving.payment_header import HEADER, parse_payment_header
from provenant.serving.service import LimitExceeded, PendingCompletion, ServingService, decode_text

MAX_MESSAGES = 64


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields (user, seed, ...) are ignored
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = 1
    stop: str | list[str] | None = None
    ignore_eos: bool = False  # vLLM's extension: always produce max_tokens tokens

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            raise LimitExceeded("only n=1 is supported")
        if self.stop:
            raise LimitExceeded("stop sequences are not supported; use max_tokens")
        extra = self.model_extra or {}
        for name in ("logprobs", "top_logprobs", "echo", "tools", "functions", "suffix"):
            if extra.get(name) not in (None, False, 0, [], ""):
                raise LimitExceeded(f"parameter {name!r} is not supported")
        if extra.get("best_of") not in (None, 1):
            raise LimitExceeded("parameter 'best_of' is not supported")


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(min_length=1)

    def prompt_text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise LimitExceeded("send one prompt per request")
            return self.prompt[0]
        return self.prompt


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def prompt_text(self) -> str:
        """The one chat template of the served bases: role-tagged turns, then the assistant's tag."""
        return "".join(f"<|{m.role}|>\n{m.text()}\n" for m in self.messages) + "<|assistant|>\n"


def _usage(pending: PendingCompletion) -> dict[str, int]:
    prompt, completion = pending.prompt_tokens, len(pending.generation.tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Call:
    """One completion or chat call: shapes its response and chunks in the OpenAI format."""

    def __init__(self, chat: bool, pending: PendingCompletion) -> None:
        self.chat, self.pending = chat, pending
        self.id = ("chatcmpl-" if chat else "cmpl-") + pending.call_id[2:]
        self.created = int(time.time())
        self.model = pending.served.record.name

    def envelope(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices,
                **extra}

    def full(self, text: str, finish: str, provenance: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                      "logprobs": None}
            return self.envelope("chat.completion", [choice], usage=_usage(self.pending), provenance=provenance)
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return self.envelope("text_completion", [choice], usage=_usage(self.pending), provenance=provenance)

    def chunk(self, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else \
                ({} if text is None else {"content": text})
            return self.envelope("chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": finish,
                                                             "logprobs": None}])
        return self.envelope("text_completion", [{"index": 0, "text": text or "", "finish_reason": finish,
                                                  "logprobs": None}])


def _sse(payload: dict[str, Any] | str) -> bytes:
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {body}\n\n".encode()


async def payment_required_or_raise(service: ServingService, request: Request, model: str,
                                    exc: PaymentRequired) -> JSONResponse:
    """The x402 v2 402 answer for `model`; re-raises (plain 402/404) when no requirements can be built."""
    try:
        requirements = await run_in_threadpool(service.x402_requirements, model)
    except (X402NotAvailable, LookupError):
        raise exc from None
    return x402_http.payment_required_response(requirements, exc, str(request.url))


def create_router(service: ServingService) -> APIRouter:
    router = APIRouter()

    async def start(request: Request, body: _Common, prompt: str, max_tokens: int | None) -> PendingCompletion:
        body.refuse_unsupported()
        tokens = 16 if max_tokens is None else max_tokens
        key = bearer_key(request.headers.get("authorization"))  # the openai client's api_key
        if key is not None:  # an API key (serving/api_keys.py) pays against its cap
            key_id = service.api_keys.authenticate(key)  # 401 for an unknown or revoked key
            return await run_in_threadpool(service.start_completion, body.model, prompt, tokens, None, None,
                                           asyncio.get_running_loop(), body.ignore_eos, None, key_id)
        x402 = x402_http.parse_signature(request)
        voucher, signature = (None, None) if x402 is not None else parse_payment_header(request.headers.get(HEADER))
        return await run_in_threadpool(service.start_completion, body.model, prompt, tokens, voucher, signature,
                                       asyncio.get_running_loop(), body.ignore_eos, x402)

    async def respond(chat: bool, body: _Common, pending: PendingCompletion) -> Any:
        call = _Call(chat, pending)
        if not body.stream:
            try:
                async for _ in pending.generation.stream():
                    pass
                receipt = await run_in_threadpool(service.finish_completion, pending)
            finally:
                service.release(pending)
            return JSONResponse(call.full(pending.text(), pending.finish_reason(), receipt.to_json()),
                                headers=x402_http.payment_response_headers(pending.settlement))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        try:  # the status line and headers go first: an x402 payment is settled before streaming
            settlement = await run_in_threadpool(service.settle_x402, pending)
        except BaseException:
            service.release(pending)
            raise
        return StreamingResponse(_stream(call, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          **x402_http.payment_response_headers(settlement)})

    async def paid(request: Request, chat: bool, body: _Common, prompt: str, max_tokens: int | None) -> Any:
        try:
            pending = await start(request, body, prompt, max_tokens)
            return await respond(chat, body, pending)
        except PaymentRequired as exc:
            return await payment_required_or_raise(service, request, body.model, exc)

    async def _stream(call: _Call, include_usage: bool) -> AsyncIterator[bytes]:
        pending = call.pending
        sent = ""
        try:
            if call.chat:
                yield _sse(call.chunk(None, None, role=True))
            async for _ in pending.generation.stream():
                text = decode_text(pending.base, pending.generation.tokens)
                # Hold back a partial UTF-8 sequence (decoded as U+FFFD) until its last byte arrives.
                if text.startswith(sent) and not text.endswith("\ufffd") and len(text) > len(sent):
                    yield _sse(call.chunk(text[len(sent):], None))
                    sent = text
            receipt = (await run_in_threadpool(service.finish_completion, pending)).to_json()
            text = pending.text()
            rest = text[len(sent):] if text.startswith(sent) else ""
            final = call.chunk(rest or None, pending.finish_reason())
            if include_usage:
                yield _sse(final)
                final = {**call.envelope(final["object"], []), "usage": _usage(pending)}
            yield _sse({**final, "provenance": receipt})
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in-band
            from provenant.serving.errors import error_body

            status, body = error_body(exc)
            yield _sse({**body, "status": status})
        finally:
            service.release(pending)
        yield _sse("[DONE]")

    @router.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Any:
        return await paid(request, False, body, body.prompt_text(), body.max_tokens)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest) -> Any:
        return await paid(request, True, body, body.prompt_text(), body.max_completion_tokens or body.max_tokens)

    return router
