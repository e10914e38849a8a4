-- PII findings: entity type and counts, never values. Source says who found them: the SDK (reported on
-- the span as counts) or the collector's own pass. SdkMissed marks what the server found in a span
-- that reached it unscrubbed: a leak the sending SDK did not catch. SdkScrubbed says whether the sender
-- claimed to scrub (a Veil SDK with scrubbing on) at all.
CREATE TABLE IF NOT EXISTS pii_findings (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    EntityType LowCardinality(String) CODEC(ZSTD(1)),
    Count UInt32 CODEC(T64, ZSTD(1)),
    Detector LowCardinality(String) CODEC(ZSTD(1)),
    Location LowCardinality(String) CODEC(ZSTD(1)),
    Source LowCardinality(String) CODEC(ZSTD(1)),
    SdkScrubbed UInt8 CODEC(ZSTD(1)),
    SdkMissed UInt8 CODEC(ZSTD(1)),
    VeilBatch UInt64 CODEC(T64, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_veil_batch VeilBatch TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ProjectId, EntityType, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(${TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;
