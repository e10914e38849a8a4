-- Alert history: one row per state change (firing, resolved) of a rule's label set (Fingerprint).
CREATE TABLE IF NOT EXISTS alerts (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(3) CODEC(Delta(8), ZSTD(1)),
    RuleId LowCardinality(String) CODEC(ZSTD(1)),
    RuleName LowCardinality(String) CODEC(ZSTD(1)),
    Fingerprint String CODEC(ZSTD(1)),
    Status LowCardinality(String) CODEC(ZSTD(1)),
    Severity LowCardinality(String) CODEC(ZSTD(1)),
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Annotations Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Value Float64 CODEC(ZSTD(1)),
    StartsAt DateTime64(3) CODEC(ZSTD(1)),
    EndsAt Nullable(DateTime64(3)) CODEC(ZSTD(1)),
    NotificationId String CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, RuleId, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(${TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;

-- Every delivery attempt of a notification to a destination (webhook, slack, pagerduty).
-- Outcome: delivered | retry | failed (no retry: a 4xx) | dead (attempts exhausted) | disabled (410).
CREATE TABLE IF NOT EXISTS deliveries (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(3) CODEC(Delta(8), ZSTD(1)),
    NotificationId String CODEC(ZSTD(1)),
    Fingerprint String CODEC(ZSTD(1)),
    RuleId LowCardinality(String) CODEC(ZSTD(1)),
    Destination LowCardinality(String) CODEC(ZSTD(1)),
    DestinationType LowCardinality(String) CODEC(ZSTD(1)),
    Attempt UInt16 CODEC(ZSTD(1)),
    Outcome LowCardinality(String) CODEC(ZSTD(1)),
    HttpStatus UInt16 CODEC(ZSTD(1)),
    Error String CODEC(ZSTD(1)),
    LatencyMs Float64 CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, Destination, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(${TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;
