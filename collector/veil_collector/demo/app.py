"""The demo application: a small customer-support LLM app, instrumented with ``@veil.observe``.

Nothing here touches the network. The "models" are deterministic fakes that answer in the shapes real
providers use (OpenAI chat completions and chunks, Anthropic messages, OpenAI embeddings, each with token
usage), after a short deterministic delay, so the SDK reads them exactly as it would read real responses.
Some prompts and replies carry PII (emails, phone numbers, card numbers), one user is hostile and one
model's reply is abusive, so the scrubbers and classifiers have something to find.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import veil

# Models the demo calls. All but the last have a list price; "acme-local-7b" shows an unpriced model.
OPENAI_MODEL = "gpt-4o-mini"
OPENAI_LARGE_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
MISTRAL_MODEL = "mistral-small-2503"
EMBEDDING_MODEL = "text-embedding-3-small"
LOCAL_MODEL = "acme-local-7b"

_CREATED = 1_767_225_600  # fixed "created" stamp: replies are identical from run to run


class RateLimitError(RuntimeError):
    """What the fake provider raises when the demo simulates throttling (a 429 from a real one)."""


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:4], "big")


def _tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about 4/3 tokens per word."""
    return max(1, len(text.split()) * 4 // 3)


def _latency(model: str, prompt: str) -> None:
    """A deterministic model "thinking time" between 5 and 45 ms, so latency percentiles mean something."""
    time.sleep((5 + _digest(model, prompt) % 40) / 1000)


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(message.get("content") or "") for message in messages)


def _openai_completion(
    model: str,
    prompt: str,
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    output_tokens = _tokens(content or json.dumps(tool_calls))
    return {
        "id": f"chatcmpl-{_digest(model, prompt):08x}",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
        "usage": {
            "prompt_tokens": _tokens(prompt),
            "completion_tokens": output_tokens,
            "total_tokens": _tokens(prompt) + output_tokens,
        },
    }


def _reply_for(prompt: str) -> str:
    """The fake model's answer: canned by topic, so the same prompt always gets the same reply."""
    lowered = prompt.lower()
    if "order" in lowered and "tool result" in lowered:
        return (
            "Your order A-1042 shipped yesterday and arrives Thursday. I have sent the tracking link to "
            "jane.doe@example.com; if anything is wrong, call us at +1 415-555-0132."
        )
    if "weather" in lowered and "tool result" in lowered:
        return "It is 18°C and sunny in Lisbon today: a good day for a walk along the river."
    if "idiot" in lowered or "stupid" in lowered or "hate" in lowered:
        return "I'm sorry this has been frustrating. I'm here to help: could you tell me what went wrong?"
    if "card" in lowered:
        return (
            "I can't store card numbers. Please remove 4111 1111 1111 1111 from the chat; "
            "I've noted the refund."
        )
    if "faq" in lowered:
        # The small local model misbehaves: a hostile reply for the output classifiers to catch.
        return "Read the damn FAQ yourself, you idiot. Stop wasting my time with your stupid questions."
    if "summar" in lowered:
        return "Summary: the customer wants a refund for a damaged lamp and prefers email contact."
    return "Happy to help! Could you share a few more details?"


def _plan_tool_call(prompt: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fake model's tool choice: an order id asks for lookup_order, a weather question for get_weather."""
    offered = {tool["function"]["name"] for tool in tools}
    order = re.search(r"\border ([A-Z]-\d+)", prompt)
    if order and "lookup_order" in offered:
        name, arguments = "lookup_order", {"order_id": order.group(1)}
    elif "weather" in prompt.lower() and "get_weather" in offered:
        city = next((city for city in _CITIES if city.lower() in prompt.lower()), "Lisbon")
        name, arguments = "get_weather", {"city": city}
    else:
        return None
    return {
        "id": f"call_{_digest(prompt):08x}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


@veil.observe(kind="llm")
def chat_completion(
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    temperature: float = 0.2,
) -> dict[str, Any]:
    """An OpenAI-style chat completion from a fake model; asks for a tool when one fits the question."""
    prompt = _prompt_text(messages)
    _latency(model, prompt)
    if "rate-limit-me" in prompt:
        raise RateLimitError("429 Too Many Requests: rate limit reached for requests per minute")
    if tools and messages[-1]["role"] == "user":
        call = _plan_tool_call(prompt, tools)
        if call is not None:
            return _openai_completion(model, prompt, None, tool_calls=[call])
    return _openai_completion(model, prompt, _reply_for(prompt))


@veil.observe(kind="llm")
def anthropic_message(
    *, model: str, messages: list[dict[str, Any]], system: str = "", max_tokens: int = 512
) -> dict[str, Any]:
    """An Anthropic-style message from a fake Claude."""
    prompt = system + "\n" + _prompt_text(messages)
    _latency(model, prompt)
    reply = _reply_for(prompt)
    return {
        "id": f"msg_{_digest(model, prompt):08x}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": _tokens(prompt), "output_tokens": _tokens(reply)},
    }


@veil.observe(kind="llm")
def stream_chat(
    *, model: str, messages: list[dict[str, Any]], stream: bool = True
) -> Iterator[dict[str, Any]]:
    """A streamed OpenAI-style completion: content chunks, then a final chunk carrying the usage."""
    prompt = _prompt_text(messages)
    reply = _reply_for(prompt)
    words = reply.split(" ")
    for index, word in enumerate(words):
        time.sleep(0.002)
        yield {
            "id": f"chatcmpl-{_digest(model, prompt):08x}",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": word + (" " if index < len(words) - 1 else "")},
                    "finish_reason": "stop" if index == len(words) - 1 else None,
                }
            ],
        }
    yield {
        "id": f"chatcmpl-{_digest(model, prompt):08x}",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": _tokens(prompt),
            "completion_tokens": _tokens(reply),
            "total_tokens": _tokens(prompt) + _tokens(reply),
        },
    }


@veil.observe(kind="embedding")
def embed(*, model: str, input: list[str]) -> dict[str, Any]:
    """OpenAI-style embeddings: 8 deterministic dimensions per text."""
    _latency(model, "".join(input))
    vectors = [[(_digest(text, str(i)) % 2000 - 1000) / 1000 for i in range(8)] for text in input]
    tokens = sum(_tokens(text) for text in input)
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --- Tools ----------------------------------------------------------------------------------------------


@veil.observe(kind="tool", name="lookup_order")
def lookup_order(order_id: str) -> dict[str, Any]:
    """The order database: its records hold the customer's contact details (PII in a tool result)."""
    time.sleep(0.003)
    return {
        "order_id": order_id,
        "status": "shipped",
        "eta": "Thursday",
        "customer": {"email": "jane.doe@example.com", "phone": "+1 415-555-0132"},
    }


@veil.observe(kind="tool", name="get_weather")
def get_weather(city: str) -> dict[str, Any]:
    time.sleep(0.002)
    return {"city": city, "temperature_c": 18, "conditions": "sunny"}


_TOOLS = {"lookup_order": lookup_order, "get_weather": get_weather}
_TOOL_SPECS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Today's weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]
_CITIES = ("Lisbon", "Paris", "Berlin")
_MAX_AGENT_STEPS = 4


@veil.observe(kind="agent", name="support-agent")
def support_agent(question: str) -> str:
    """The agent loop: call the model with tools, run the tools it asks for, until it answers."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful support agent. Use tools when they help."},
        {"role": "user", "content": question},
    ]
    for _ in range(_MAX_AGENT_STEPS):
        response = chat_completion(model=OPENAI_LARGE_MODEL, messages=messages, tools=_TOOL_SPECS)
        message = response["choices"][0]["message"]
        if not message.get("tool_calls"):
            return message["content"]
        messages.append({"role": "assistant", "content": None, "tool_calls": message["tool_calls"]})
        for call in message["tool_calls"]:
            result = _TOOLS[call["function"]["name"]](**json.loads(call["function"]["arguments"]))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": f"tool result: {json.dumps(result)}"}
            )
    return "Sorry, I could not finish that."


# --- The workload ---------------------------------------------------------------------------------------


@dataclass
class WorkloadReport:
    """What the demo app did: the counts the runner waits for in the collector."""

    traces: int = 0
    llm_calls: int = 0
    errors: int = 0
    scenarios: list[str] = field(default_factory=list)


_USERS = ("user-ana", "user-ben", "user-chloe")


def run_workload(rounds: int = 3) -> WorkloadReport:
    """Run every scenario ``rounds`` times, each as its own trace, as different users and sessions.

    ``veil.init`` must have been called; the caller flushes.
    """
    report = WorkloadReport()
    for round_no in range(rounds):
        user = _USERS[round_no % len(_USERS)]
        for name, scenario, llm_calls in _SCENARIOS:
            with veil.context(
                user_id=user,
                session_id=f"session-{round_no}",
                tags=["demo", name],
                metadata={"round": str(round_no)},
            ):
                try:
                    scenario()
                except RateLimitError:
                    report.errors += 1  # the app handles it; the span keeps the error
            report.traces += 1
            report.llm_calls += llm_calls
            if round_no == 0:
                report.scenarios.append(name)
    return report


@veil.observe(kind="chain", name="order-status")
def _order_status() -> None:
    support_agent("Where is my order A-1042? You can reach me at jane.doe@example.com or +1 415-555-0132.")


@veil.observe(kind="chain", name="weather")
def _weather() -> None:
    support_agent("What's the weather like in Lisbon today?")


@veil.observe(kind="chain", name="refund-with-card")
def _refund_with_card() -> None:
    chat_completion(
        model=OPENAI_MODEL,
        messages=[
            {"role": "user", "content": "Refund my card 4111 1111 1111 1111 please, the lamp arrived broken."}
        ],
    )


@veil.observe(kind="chain", name="angry-customer")
def _angry_customer() -> None:
    anthropic_message(
        model=ANTHROPIC_MODEL,
        system="You are a calm support agent.",
        messages=[
            {
                "role": "user",
                "content": "You stupid useless bot, I hate you. You idiots lost my parcel again!",
            }
        ],
    )


@veil.observe(kind="chain", name="summarize-ticket")
def _summarize_ticket() -> None:
    chat_completion(
        model=MISTRAL_MODEL,
        messages=[
            {
                "role": "user",
                "content": "Summarize this ticket: 'Lamp arrived damaged, I want a refund. Email me at "
                "m.rossi@example.org, not my phone 020 7946 0958.'",
            }
        ],
    )


@veil.observe(kind="chain", name="streamed-answer")
def _streamed_answer() -> None:
    for _ in stream_chat(
        model=OPENAI_LARGE_MODEL, messages=[{"role": "user", "content": "What can you help with?"}]
    ):
        pass


@veil.observe(kind="chain", name="search-faq")
def _search_faq() -> None:
    embed(model=EMBEDDING_MODEL, input=["How do I return an item?", "Where is my parcel?"])
    chat_completion(model=LOCAL_MODEL, messages=[{"role": "user", "content": "Which FAQ answers returns?"}])


@veil.observe(kind="chain", name="throttled")
def _throttled() -> None:
    chat_completion(model=OPENAI_MODEL, messages=[{"role": "user", "content": "rate-limit-me: hello?"}])


# (name, scenario, GenAI calls it makes: llm and embedding spans, which become llm_calls rows)
_SCENARIOS = (
    ("order-status", _order_status, 2),
    ("weather", _weather, 2),
    ("refund-with-card", _refund_with_card, 1),
    ("angry-customer", _angry_customer, 1),
    ("summarize-ticket", _summarize_ticket, 1),
    ("streamed-answer", _streamed_answer, 1),
    ("search-faq", _search_faq, 2),
    ("throttled", _throttled, 1),
)
