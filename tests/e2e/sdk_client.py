"""An application process for the end-to-end tests: the Veil SDK sending a few traces to a collector.

Run as ``python sdk_client.py ENDPOINT API_KEY LABEL``. It prints one JSON line: the trace ids it produced
(by scenario) and the SDK's export counters after a flush. A separate process, as a real application is,
so that ``veil.init`` (set once per process) and the collector never share globals.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from opentelemetry import trace

import veil


def _trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


@veil.observe(kind="llm")
def chat(*, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    if "fail" in messages[-1]["content"]:
        raise TimeoutError("upstream model timed out")
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    }


@veil.observe(kind="tool", name="lookup")
def lookup(key: str) -> dict[str, str]:
    return {"key": key, "value": "42"}


@veil.observe(kind="agent", name="helper")
def agent(question: str) -> tuple[str, str]:
    lookup("answer")
    chat(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    return _trace_id(), "ok"


@veil.observe(kind="chain", name="failing")
def failing() -> str:
    trace_id = _trace_id()
    try:
        chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "please fail"}])
    except TimeoutError:
        pass
    return trace_id


def main(endpoint: str, api_key: str, label: str) -> None:
    veil.init(endpoint=endpoint, api_key=api_key, service_name=f"e2e-{label}", environment="test")
    with veil.context(user_id=f"user-{label}", session_id=f"session-{label}", tags=["e2e"]):
        agent_trace, _ = agent("Email me at alice.smith@example.com when it is done")
        failing_trace = failing()
    veil.flush()
    stats = veil.stats()
    veil.shutdown()
    print(json.dumps({"agent": agent_trace, "failing": failing_trace, "stats": stats}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
