"""Reads GenAI facts out of call arguments and OpenAI-style / Anthropic-style responses.

Runs on the export thread, on objects or plain dicts alike (`_get` reads either), and knows no SDK class by
import: an OpenAI `ChatCompletion`, an Anthropic `Message`, the dicts their `model_dump()` gives, and
hand-made dicts of the same shape all work. Messages come out in the GenAI semconv schema
(`{"role", "parts": [{"type": "text", "content"}...]}`); the caller serializes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from veil import semconv as sc

# Request keyword → (attribute, type). `max_completion_tokens` is OpenAI's newer name for max_tokens.
_REQUEST_PARAMS: tuple[tuple[str, str, type], ...] = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE, float),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P, float),
    ("top_k", sc.GEN_AI_REQUEST_TOP_K, float),  # a double in semconv v1.41
    ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS, int),
    ("max_completion_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS, int),
    ("max_output_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS, int),
    ("frequency_penalty", sc.GEN_AI_REQUEST_FREQUENCY_PENALTY, float),
    ("presence_penalty", sc.GEN_AI_REQUEST_PRESENCE_PENALTY, float),
    ("seed", sc.GEN_AI_REQUEST_SEED, int),
    ("n", sc.GEN_AI_REQUEST_CHOICE_COUNT, int),
)

# Anthropic stop_reason → semconv finish reason.
_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
}
_OPENAI_FINISH = {"tool_calls": "tool_call", "function_call": "tool_call"}

_OPENAI_OBJECTS = frozenset(
    {"chat.completion", "chat.completion.chunk", "text_completion", "response", "list"}
)


def _get(obj: Any, key: str) -> Any:
    """`obj[key]` for mappings, `obj.key` for objects; None when absent or when reading it fails."""
    try:
        if type(obj) is dict or isinstance(obj, Mapping):
            return obj.get(key)
        return getattr(obj, key, None)
    except Exception:
        # A proxy or lazy object may raise anything from attribute access; the span survives without it.
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def request_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Returns gen_ai.request.* attributes from the call's keyword arguments (model, temperature, ...)."""
    attrs: dict[str, Any] = {}
    model = params.get("model")
    if isinstance(model, str):
        attrs[sc.GEN_AI_REQUEST_MODEL] = model
    for key, attribute, kind in _REQUEST_PARAMS:
        value = params.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if kind is float and isinstance(value, (int, float)):
            attrs[attribute] = float(value)
        elif kind is int and isinstance(value, int):
            attrs[attribute] = value
    stop = params.get("stop") or params.get("stop_sequences")
    if isinstance(stop, str):
        attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    if params.get("stream") is True:
        attrs[sc.GEN_AI_REQUEST_STREAM] = True
    return attrs


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _parts(content: Any) -> list[dict[str, Any]]:
    """Message content (a string or a list of OpenAI / Anthropic content blocks) → semconv parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(content)]
    if not isinstance(content, (list, tuple)):
        return [{"type": type(content).__name__, "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append(_text_part(block))
            continue
        kind = _get(block, "type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(_text_part(_get(block, "text") or ""))
        elif kind == "tool_use":
            parts.append(
                {
                    "type": "tool_call",
                    "id": _get(block, "id"),
                    "name": _get(block, "name"),
                    "arguments": _get(block, "input"),
                }
            )
        elif kind == "tool_result":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": _get(block, "tool_use_id"),
                    "response": _get(block, "content"),
                }
            )
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": _get(block, "thinking") or _get(block, "text")})
        elif kind == "image_url":
            image = _get(block, "image_url")
            parts.append({"type": "uri", "modality": "image", "uri": _get(image, "url") if image else None})
        else:
            parts.append({"type": kind or "unknown", "content": block})
    return parts


def _openai_tool_calls(tool_calls: Any) -> list[dict[str, Any]]:
    calls = []
    for call in tool_calls or ():
        function = _get(call, "function")
        calls.append(
            {
                "type": "tool_call",
                "id": _get(call, "id"),
                "name": _get(function, "name") if function is not None else None,
                "arguments": _get(function, "arguments") if function is not None else None,
            }
        )
    return calls


def input_content(params: Mapping[str, Any]) -> tuple[list[Any] | None, list[Any] | None]:
    """Returns (system_instructions, input_messages) from the call's arguments, in the semconv schema.

    Recognises `messages=` (OpenAI or Anthropic message lists), `system=` (Anthropic's separate system
    prompt), `prompt=` and `input=` strings. Either element is None when the arguments carry no such thing.
    """
    system: list[Any] | None = None
    raw_system = params.get("system") or params.get("instructions")
    if isinstance(raw_system, str):
        system = [_text_part(raw_system)]
    elif isinstance(raw_system, (list, tuple)):
        system = _parts(raw_system)

    raw_messages = params.get("messages")
    if isinstance(raw_messages, (list, tuple)):
        messages = []
        for message in raw_messages:
            role = _get(message, "role") or "user"
            parts = _parts(_get(message, "content"))
            parts.extend(_openai_tool_calls(_get(message, "tool_calls")))
            if role == "tool":
                parts = [
                    {
                        "type": "tool_call_response",
                        "id": _get(message, "tool_call_id"),
                        "response": _get(message, "content"),
                    }
                ]
            messages.append({"role": role, "parts": parts})
        return system, messages
    for key in ("prompt", "input"):
        value = params.get(key)
        if isinstance(value, str):
            return system, [{"role": "user", "parts": [_text_part(value)]}]
    return system, None


def provider_of(response: Any) -> str | None:
    """Guesses gen_ai.provider.name from a response's shape: OpenAI's `object`, Anthropic's `type`."""
    if _get(response, "type") == "message" and _get(response, "content") is not None:
        return sc.PROVIDER_ANTHROPIC
    if _get(response, "object") in _OPENAI_OBJECTS:
        return sc.PROVIDER_OPENAI
    return None


def usage_attributes(usage: Any) -> dict[str, int]:
    """Token counts from an OpenAI (`prompt_tokens`...) or Anthropic (`input_tokens`...) usage block.

    Anthropic reports cached tokens beside `input_tokens`; semconv's input_tokens includes them, so they
    are added in.
    """
    attrs: dict[str, int] = {}
    if usage is None:
        return attrs
    input_tokens = _int(_get(usage, "input_tokens"))
    if input_tokens is None:
        input_tokens = _int(_get(usage, "prompt_tokens"))
    output_tokens = _int(_get(usage, "output_tokens"))
    if output_tokens is None:
        output_tokens = _int(_get(usage, "completion_tokens"))
    cache_read = _int(_get(usage, "cache_read_input_tokens"))
    cache_creation = _int(_get(usage, "cache_creation_input_tokens"))
    if input_tokens is not None and (cache_read is not None or cache_creation is not None):
        input_tokens += (cache_read or 0) + (cache_creation or 0)
    if cache_read is None:
        details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
        cache_read = _int(_get(details, "cached_tokens")) if details is not None else None
    details = _get(usage, "completion_tokens_details") or _get(usage, "output_tokens_details")
    reasoning = _int(_get(details, "reasoning_tokens")) if details is not None else None
    for attribute, value in (
        (sc.GEN_AI_USAGE_INPUT_TOKENS, input_tokens),
        (sc.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens),
        (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read),
        (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_creation),
        (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning),
    ):
        if value is not None:
            attrs[attribute] = value
    return attrs


def response_attributes(response: Any) -> dict[str, Any]:
    """Returns response model, id, provider, usage and finish reasons found on a response object or dict."""
    attrs: dict[str, Any] = {}
    if response is None or isinstance(response, (str, bytes, int, float, list, tuple)):
        return attrs
    model = _get(response, "model")
    if isinstance(model, str):
        attrs[sc.GEN_AI_RESPONSE_MODEL] = model
    response_id = _get(response, "id")
    if isinstance(response_id, str):
        attrs[sc.GEN_AI_RESPONSE_ID] = response_id
    provider = provider_of(response)
    if provider is not None:
        attrs[sc.GEN_AI_PROVIDER_NAME] = provider
    attrs.update(usage_attributes(_get(response, "usage")))
    reasons = _finish_reasons(response)
    if reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    return attrs


def _finish_reasons(response: Any) -> list[str]:
    stop_reason = _get(response, "stop_reason")
    if isinstance(stop_reason, str):
        return [_ANTHROPIC_FINISH.get(stop_reason, stop_reason)]
    reasons = []
    choices = _get(response, "choices")
    if isinstance(choices, (list, tuple)):
        for choice in choices:
            reason = _get(choice, "finish_reason")
            if isinstance(reason, str):
                reasons.append(_OPENAI_FINISH.get(reason, reason))
    return reasons


def output_messages(response: Any) -> list[dict[str, Any]] | None:
    """Returns the response's output messages in the semconv schema, or None if it has none.

    One message per OpenAI choice; one for an Anthropic message; a plain string result is one assistant
    text message.
    """
    if isinstance(response, str):
        return [{"role": "assistant", "parts": [_text_part(response)], "finish_reason": "stop"}]
    if response is None or isinstance(response, (bytes, int, float, list, tuple)):
        return None
    if _get(response, "type") == "message" and _get(response, "content") is not None:
        reason = _get(response, "stop_reason")
        return [
            {
                "role": _get(response, "role") or "assistant",
                "parts": _parts(_get(response, "content")),
                "finish_reason": _ANTHROPIC_FINISH.get(reason, reason or "stop"),
            }
        ]
    choices = _get(response, "choices")
    if not isinstance(choices, (list, tuple)) or not choices:
        return None
    messages = []
    for choice in choices:
        reason = _get(choice, "finish_reason")
        message = _get(choice, "message")
        if message is not None:
            parts = _parts(_get(message, "content"))
            parts.extend(_openai_tool_calls(_get(message, "tool_calls")))
            role = _get(message, "role") or "assistant"
        else:
            text = _get(choice, "text")
            parts = [_text_part(text)] if isinstance(text, str) else []
            role = "assistant"
        messages.append(
            {"role": role, "parts": parts, "finish_reason": _OPENAI_FINISH.get(reason, reason or "stop")}
        )
    return messages


def stream_output(chunks: Sequence[Any], limit: int) -> tuple[str | None, dict[str, Any]]:
    """Folds streamed chunks into (concatenated text, response attributes).

    Chunks may be strings, OpenAI `chat.completion.chunk`s (text in `choices[0].delta.content`, usage on
    the last chunk), Anthropic stream events (`content_block_delta`, `message_start`, `message_delta`), or
    dicts of those shapes. Concatenation stops once `limit` characters are gathered.
    """
    texts: list[str] = []
    size = 0
    attrs: dict[str, Any] = {}
    reasons: list[str] = []
    for chunk in chunks:
        text = chunk if isinstance(chunk, str) else _chunk_text(chunk, attrs, reasons)
        if text and size < limit:
            texts.append(text)
            size += len(text)
    if reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    return ("".join(texts) if texts else None), attrs


def _chunk_text(chunk: Any, attrs: dict[str, Any], reasons: list[str]) -> str | None:
    event_type = _get(chunk, "type")
    if event_type == "content_block_delta":
        return _get(_get(chunk, "delta"), "text")
    if event_type == "message_start":
        message = _get(chunk, "message")
        attrs.update(response_attributes(message))
        attrs[sc.GEN_AI_PROVIDER_NAME] = sc.PROVIDER_ANTHROPIC
        return None
    if event_type == "message_delta":
        usage = usage_attributes(_get(chunk, "usage"))
        if sc.GEN_AI_USAGE_OUTPUT_TOKENS in usage:
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage[sc.GEN_AI_USAGE_OUTPUT_TOKENS]
        reason = _get(_get(chunk, "delta"), "stop_reason")
        if isinstance(reason, str):
            reasons.append(_ANTHROPIC_FINISH.get(reason, reason))
        return None
    found = response_attributes(chunk)
    found.pop(sc.GEN_AI_RESPONSE_FINISH_REASONS, None)
    attrs.update(found)
    choices = _get(chunk, "choices")
    if not isinstance(choices, (list, tuple)) or not choices:
        return None
    reason = _get(choices[0], "finish_reason")
    if isinstance(reason, str):
        reasons.append(_OPENAI_FINISH.get(reason, reason))
    delta = _get(choices[0], "delta")
    content = _get(delta, "content") if delta is not None else _get(choices[0], "text")
    return content if isinstance(content, str) else None


def iter_stream_messages(text: str | None, reasons: Iterable[str]) -> list[dict[str, Any]] | None:
    """The single assistant output message of a stream whose text was concatenated."""
    if text is None:
        return None
    reason = next(iter(reasons), "stop")
    return [{"role": "assistant", "parts": [_text_part(text)], "finish_reason": reason}]
