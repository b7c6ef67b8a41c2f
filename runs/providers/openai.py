"""The OpenAI Chat Completions API's body and answer (its path and headers: swrly.providers).

https://platform.openai.com/docs/api-reference/chat — the output limit travels as
`max_completion_tokens` (`max_tokens` is deprecated there and refused by reasoning models); the
system prompt as a `system` message, which every chat model and OpenAI-compatible gateway
accepts (`developer` is its newer name for reasoning models, which treat `system` the same).
The sandbox provider speaks this protocol too, so `sandbox` steps use this module.

With `"stream": true` (and `stream_options.include_usage`, so the usage arrives in a last chunk
with no choices) the answer is a series of `chat.completion.chunk` events ending in
`data: [DONE]` (https://platform.openai.com/docs/api-reference/chat-streaming); a chunk that
carries `error` breaks the stream off.
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
from swrly.providers import OPENAI_CHAT_COMPLETIONS


def build_body(call: ModelCall) -> dict[str, Any]:
    """The Chat Completions request body: a system message when set, then the prompt."""
    messages = [{"role": "system", "content": call.system}] if call.system else []
    messages.append({"role": "user", "content": call.prompt})
    body: dict[str, Any] = {
        "model": call.model,
        "messages": messages,
        "max_completion_tokens": call.max_tokens,
    }
    if call.temperature is not None:
        body["temperature"] = call.temperature
    if call.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_answer(payload: Any) -> ParsedAnswer:
    """Text and usage from a Chat Completions answer; UnexpectedAnswer for another shape."""
    if not isinstance(payload, dict):
        raise UnexpectedAnswer("the answer is not a JSON object")
    choices, usage = payload.get("choices"), payload.get("usage")
    if not isinstance(choices, list) or not choices or not isinstance(usage, dict):
        raise UnexpectedAnswer("the answer has no choices or no usage")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise UnexpectedAnswer("choices[0] has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise UnexpectedAnswer("choices[0].message.content is not text")
    return ParsedAnswer(
        text=content or "",  # null when the model answered only with a refusal or tool call
        input_tokens=require_int(usage.get("prompt_tokens"), "usage.prompt_tokens"),
        output_tokens=require_int(usage.get("completion_tokens"), "usage.completion_tokens"),
    )


DONE = "[DONE]"


class ChunkStream(StreamReader):
    """Chat Completions chunks, one event each (see the module's docstring)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.usage: dict[str, Any] | None = None

    def read(self, event: str, data: str) -> str:
        if data.strip() == DONE:
            self.finished = True
            return ""
        chunk = json_event(data)
        if chunk.get("error") is not None or event == "error":
            raise StreamBrokeOff(data)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise UnexpectedAnswer("a chunk has no choices list")
        text = ""
        for choice in choices:  # one choice (n=1); each delta's content is appended
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise UnexpectedAnswer("a chunk's delta.content is not text")
            text += content or ""
        if text:
            self.texts.append(text)
        return text

    def answer(self) -> ParsedAnswer:
        if self.usage is None:
            raise UnexpectedAnswer(
                "the stream carried no usage chunk (a gateway that drops "
                "stream_options.include_usage sends none)"
            )
        return ParsedAnswer(
            text="".join(self.texts),
            input_tokens=require_int(self.usage.get("prompt_tokens"), "usage.prompt_tokens"),
            output_tokens=require_int(
                self.usage.get("completion_tokens"), "usage.completion_tokens"
            ),
        )


OPENAI = WireProtocol(
    wire=OPENAI_CHAT_COMPLETIONS,
    build_body=build_body,
    parse_answer=parse_answer,
    stream_reader=ChunkStream,
)
