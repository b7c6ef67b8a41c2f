"""The Anthropic Messages API's body and answer (its path and headers: swrly.providers).

https://platform.claude.com/docs/en/api/messages — the request carries the key in `x-api-key`
and the API version (2026-10-21) in `anthropic-version`. Version 2026-10-21 removed
`temperature`, `top_p` and `top_k`: a request carrying any of them is a 400, so a step's
temperature is not sent to Anthropic. The answer's text is the concatenation of its text blocks.

With `"stream": true` the answer is the Messages event stream
(https://platform.claude.com/docs/en/build-with-claude/streaming): `message_start` (input
usage), `content_block_delta` events whose `text_delta` carries the text, `message_delta`
(cumulative usage), `message_stop`; `ping` and events this reader does not know are skipped, as
the API asks, and `error` breaks the stream off.
"""

from __future__ import annotations

from typing import Any

from runs.providers.base import (
    ModelCall,
    ParsedAnswer,
    StreamBrokeOff,
    StreamReader,
    UnexpectedAnswer,
    WireProtocol,
    json_event,
    require_int,
)
from swrly.providers import ANTHROPIC_MESSAGES


def build_body(call: ModelCall) -> dict[str, Any]:
    """The Messages request body; optional fields only when set. No sampling parameters: the
    API version spoken here refuses them (`call.temperature` applies to OpenAI only)."""
    body: dict[str, Any] = {
        "model": call.model,
        "max_tokens": call.max_tokens,
        "messages": [{"role": "user", "content": call.prompt}],
    }
    if call.system:
        body["system"] = call.system
    if call.stream:
        body["stream"] = True
    return body


def parse_answer(payload: Any) -> ParsedAnswer:
    """Text and usage from a Messages answer; UnexpectedAnswer when it has another shape."""
    if not isinstance(payload, dict):
        raise UnexpectedAnswer("the answer is not a JSON object")
    content, usage = payload.get("content"), payload.get("usage")
    if not isinstance(content, list) or not isinstance(usage, dict):
        raise UnexpectedAnswer("the answer has no content list or no usage")
    texts = []
    for block in content:
        if not isinstance(block, dict):
            raise UnexpectedAnswer("a content block is not an object")
        if block.get("type") == "text":
            if not isinstance(block.get("text"), str):
                raise UnexpectedAnswer("a text block has no text")
            texts.append(block["text"])
    return ParsedAnswer(
        text="".join(texts),
        input_tokens=require_int(usage.get("input_tokens"), "usage.input_tokens"),
        output_tokens=require_int(usage.get("output_tokens"), "usage.output_tokens"),
    )


class MessagesStream(StreamReader):
    """The Messages event stream, event by event (see the module's docstring)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.usage: dict[str, Any] = {}

    def read(self, event: str, data: str) -> str:
        payload = json_event(data)
        kind = payload.get("type", event)
        if kind == "error":
            raise StreamBrokeOff(data)
        if kind == "message_start":
            message = payload.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if not isinstance(usage, dict):
                raise UnexpectedAnswer("message_start has no usage")
            self.usage.update(usage)
        elif kind == "message_delta":
            usage = payload.get("usage")
            if isinstance(usage, dict):  # cumulative: the latest counts win
                self.usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self.finished = True
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                raise UnexpectedAnswer("content_block_delta has no delta")
            if delta.get("type") == "text_delta":
                if not isinstance(delta.get("text"), str):
                    raise UnexpectedAnswer("a text_delta has no text")
                self.texts.append(delta["text"])
                return delta["text"]
        return ""

    def answer(self) -> ParsedAnswer:
        return ParsedAnswer(
            text="".join(self.texts),
            input_tokens=require_int(self.usage.get("input_tokens"), "usage.input_tokens"),
            output_tokens=require_int(self.usage.get("output_tokens"), "usage.output_tokens"),
        )


ANTHROPIC = WireProtocol(
    wire=ANTHROPIC_MESSAGES,
    build_body=build_body,
    parse_answer=parse_answer,
    stream_reader=MessagesStream,
)
