"""The Anthropic Messages API's body and answer (its path and headers: swrly.providers).

https://platform.claude.com/docs/en/api/messages — the request carries the key in `x-api-key`
and the API version (2026-10-21) in `anthropic-version`. Version 2026-10-21 removed
`temperature`, `top_p` and `top_k`: a request carrying any of them is a 400, so a step's
temperature is not sent to Anthropic. The answer's text is the concatenation of its text blocks.
"""

from __future__ import annotations

from typing import Any

from runs.providers.base import (
    ModelCall,
    ParsedAnswer,
    UnexpectedAnswer,
    WireProtocol,
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


ANTHROPIC = WireProtocol(
    wire=ANTHROPIC_MESSAGES,
    build_body=build_body,
    parse_answer=parse_answer,
)
