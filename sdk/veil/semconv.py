"""Every span and resource attribute name the SDK writes, in one place.

The collector imports these names too (`from veil.semconv import ...`), so a rename here is a protocol
change. GenAI names follow the OpenTelemetry GenAI semantic conventions v1.41 (all `Development`
status upstream); `veil.*` names are Veil's own.
"""

from __future__ import annotations

from typing import Final

# --- Resource -------------------------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"

# --- GenAI: operation and provider ----------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"

# Well-known values of gen_ai.operation.name.
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_EMBEDDINGS: Final = "embeddings"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"

# Well-known values of gen_ai.provider.name that the SDK detects on its own.
PROVIDER_OPENAI: Final = "openai"
PROVIDER_ANTHROPIC: Final = "anthropic"

# --- GenAI: request ---------------------------------------------------------------------------------------
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"

# --- GenAI: response and usage --------------------------------------------------------------------------
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

# --- GenAI: content (JSON strings in the semconv message schema) ----------------------------------------
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"

# --- GenAI: tools, agents, workflows, conversations -----------------------------------------------------
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"

# --- General ----------------------------------------------------------------------------------------------
ERROR_TYPE: Final = "error.type"
USER_ID: Final = "user.id"
SESSION_ID: Final = "session.id"

# --- Veil's own -------------------------------------------------------------------------------------------
VEIL_KIND: Final = "veil.kind"
VEIL_TAGS: Final = "veil.tags"
VEIL_METADATA_PREFIX: Final = "veil.metadata."
VEIL_INPUT: Final = "veil.input"
VEIL_OUTPUT: Final = "veil.output"
# How a streamed span ended: "exhausted" or "closed" (also when an abandoned generator is collected).
VEIL_STREAM_END: Final = "veil.stream.end"
VEIL_STREAM_CHUNKS: Final = "veil.stream.chunks"
VEIL_PII_SCRUBBED: Final = "veil.pii.scrubbed"
VEIL_PII_FINDINGS: Final = "veil.pii.findings"
VEIL_COLLECTOR_PII_FINDINGS: Final = "veil.collector.pii.findings"
# Set when the scrub hook failed and the SDK removed every content attribute instead of exporting it raw.
VEIL_CONTENT_DROPPED: Final = "veil.content.dropped"
# Guardrail decisions: one span event per decision; a blocked call also marks its span.
VEIL_GUARD_EVENT: Final = "veil.guard"
VEIL_GUARD_CHECK: Final = "veil.guard.check"
VEIL_GUARD_DECISION: Final = "veil.guard.decision"
VEIL_GUARD_SCORE: Final = "veil.guard.score"
VEIL_GUARD_TARGET: Final = "veil.guard.target"
VEIL_GUARD_REASON: Final = "veil.guard.reason"
VEIL_GUARD_BLOCKED: Final = "veil.guard.blocked"

# Values of veil.kind.
KIND_LLM: Final = "llm"
KIND_EMBEDDING: Final = "embedding"
KIND_TOOL: Final = "tool"
KIND_AGENT: Final = "agent"
KIND_CHAIN: Final = "chain"
KINDS: Final = frozenset({KIND_LLM, KIND_EMBEDDING, KIND_TOOL, KIND_AGENT, KIND_CHAIN})

# The attributes that carry user content. The scrub hook looks at these; when it fails they are removed.
CONTENT_ATTRIBUTES: Final = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_SYSTEM_INSTRUCTIONS,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
        VEIL_INPUT,
        VEIL_OUTPUT,
    }
)
