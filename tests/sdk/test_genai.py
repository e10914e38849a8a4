"""GenAI attributes read from OpenAI-style and Anthropic-style calls, objects and dicts, and streams.

The response objects are pydantic models shaped like the OpenAI and Anthropic SDKs' (which are pydantic
models too); the SDKs themselves are not dependencies.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

import veil
from veil import semconv as sc


class Message(BaseModel):
    role: str
    content: str | None = None


class Choice(BaseModel):
    index: int
    message: Message
    finish_reason: str


class PromptDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_details: PromptDetails | None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    object: str = "chat.completion.chunk"
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


def test_openai_object_response(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm")
    def complete(**kwargs: Any) -> ChatCompletion:
        return ChatCompletion(
            id="chatcmpl-1",
            model="gpt-4o-2024-08-06",
            choices=[
                Choice(index=0, message=Message(role="assistant", content="Paris"), finish_reason="stop")
            ],
            usage=Usage(
                prompt_tokens=20, completion_tokens=2, prompt_tokens_details=PromptDetails(cached_tokens=8)
            ),
        )

    complete(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        temperature=0.3,
        max_tokens=50,
        top_p=0.9,
        top_k=40,
        stop=["\n"],
        seed=7,
    )
    assert veil.flush(5)
    attrs = receiver.by_name("chat gpt-4o").attributes
    assert receiver.spans[0].kind == 3  # CLIENT
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert attrs[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.3
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert attrs[sc.GEN_AI_REQUEST_TOP_P] == 0.9
    top_k = attrs[sc.GEN_AI_REQUEST_TOP_K]
    assert isinstance(top_k, float) and top_k == 40.0  # a double in semconv v1.41
    assert attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] == ["\n"]
    assert attrs[sc.GEN_AI_REQUEST_SEED] == 7
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 20
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]},
    ]
    assert json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris"}], "finish_reason": "stop"}
    ]


def test_anthropic_dict_response_with_system_and_tool_use(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm")
    def create(**kwargs: Any) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100},
        }

    create(
        model="claude-sonnet-4-5", system="You are terse.", messages=[{"role": "user", "content": "Weather?"}]
    )
    assert veil.flush(5)
    attrs = receiver.by_name("chat claude-sonnet-4-5").attributes
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    # semconv's input_tokens includes cached tokens; Anthropic reports them separately.
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 110
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_call"]
    assert json.loads(attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "You are terse."}]
    output = json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES])
    assert output[0]["finish_reason"] == "tool_call"
    assert output[0]["parts"][1] == {
        "type": "tool_call",
        "id": "tu_1",
        "name": "weather",
        "arguments": {"city": "Oslo"},
    }


def test_update_current_sets_model_usage_output_by_hand(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm", name="custom-llm")
    def call(prompt: str) -> object:
        veil.update_current(
            model="local-7b",
            provider="ollama",
            usage={"input_tokens": 4, "output_tokens": 9},
            output="generated text",
            metadata={"gpu": "a100"},
        )
        return object()

    call("Tell me a joke")
    assert veil.flush(5)
    attrs = receiver.by_name("chat local-7b").attributes
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == "local-7b"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "local-7b"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "ollama"
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 9
    assert attrs["veil.metadata.gpu"] == "a100"
    assert "generated text" in attrs[sc.GEN_AI_OUTPUT_MESSAGES]
    assert json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == "Tell me a joke"


def test_update_current_outside_a_span_is_a_no_op(start_veil: Any) -> None:
    start_veil()
    veil.update_current(model="x", usage={"input_tokens": 1})


def test_openai_stream_chunks_are_folded(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm")
    def stream(**kwargs: Any):
        yield ChatCompletionChunk(model="gpt-4o-mini-1", choices=[ChunkChoice(delta=Delta(content="Hel"))])
        yield ChatCompletionChunk(model="gpt-4o-mini-1", choices=[ChunkChoice(delta=Delta(content="lo"))])
        yield ChatCompletionChunk(
            model="gpt-4o-mini-1", choices=[ChunkChoice(delta=Delta(), finish_reason="length")]
        )
        yield ChatCompletionChunk(
            model="gpt-4o-mini-1", choices=[], usage=Usage(prompt_tokens=5, completion_tokens=2)
        )

    chunks = list(stream(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(chunks) == 4
    assert veil.flush(5)
    attrs = receiver.by_name("chat gpt-4o-mini").attributes
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-1"
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 5
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["length"]
    assert json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "length"}
    ]
    assert attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0


def test_anthropic_stream_events_are_folded(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm")
    def stream(**kwargs: Any):
        yield {
            "type": "message_start",
            "message": {
                "type": "message",
                "model": "claude-x",
                "content": [],
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        }
        yield {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi "}}
        yield {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "there"}}
        yield {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}

    list(stream(model="claude-x", messages=[{"role": "user", "content": "hello"}]))
    assert veil.flush(5)
    attrs = receiver.by_name("chat claude-x").attributes
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert '"content":"Hi there"' in attrs[sc.GEN_AI_OUTPUT_MESSAGES]


def test_embedding_kind(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="embedding")
    def embed(input: list[str], model: str = "text-embedding-3-small") -> dict[str, Any]:
        return {
            "object": "list",
            "model": model,
            "data": [],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }

    embed(["a", "b"])
    assert veil.flush(5)
    attrs = receiver.by_name("embeddings text-embedding-3-small").attributes
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 4
    assert attrs[sc.VEIL_INPUT] == '{"input":["a","b"],"model":"text-embedding-3-small"}'


def test_long_messages_are_cut_and_stay_valid_json(start_veil: Any) -> None:
    receiver = start_veil(max_attribute_size=1024)

    @veil.observe(kind="llm")
    def chat(messages: list[dict[str, str]]) -> str:
        return "y" * 5000

    chat([{"role": "user", "content": "x" * 5000}, {"role": "user", "content": "ok"}])
    assert veil.flush(5)
    attrs = receiver.spans[0].attributes
    for key in (sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES):
        assert len(attrs[key].encode()) <= 1024
        messages = json.loads(attrs[key])
        assert messages[0]["parts"][0]["content"].endswith("…[truncated by veil]")
    assert json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES])[1]["parts"][0]["content"] == "ok"
