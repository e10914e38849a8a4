-- Classifier results, shaped like gen_ai.evaluation.result (name = Evaluator, score, label, explanation).
-- One row per (span, target, evaluator, label): toxicity stores every label the model has; identity
-- mentions are Evaluator = 'identity' with Label = the group. Service, environment and model are copied
-- from the call so dashboards filter without a join. ModelName/ModelVersion name what produced the score.
CREATE TABLE IF NOT EXISTS evaluations (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    EvaluatedAt DateTime64(3) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Environment LowCardinality(String) CODEC(ZSTD(1)),
    RequestModel LowCardinality(String) CODEC(ZSTD(1)),
    Target LowCardinality(String) CODEC(ZSTD(1)),
    Evaluator LowCardinality(String) CODEC(ZSTD(1)),
    Label LowCardinality(String) CODEC(ZSTD(1)),
    Score Float32 CODEC(ZSTD(1)),
    ModelName LowCardinality(String) CODEC(ZSTD(1)),
    ModelVersion LowCardinality(String) CODEC(ZSTD(1)),
    Explanation String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_score Score TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, Evaluator, Label, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(${TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;

-- Human labels posted through the API (e.g. name = 'toxicity', value 0/1): the ground truth for the
-- Jigsaw bias AUCs (subgroup, BPSN, BNSP).
CREATE TABLE IF NOT EXISTS feedback (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(3) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Name LowCardinality(String) CODEC(ZSTD(1)),
    Value Float64 CODEC(ZSTD(1)),
    Comment String CODEC(ZSTD(1)),
    Author String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, Name, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(${TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;
