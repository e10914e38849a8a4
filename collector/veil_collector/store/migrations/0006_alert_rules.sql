-- Alert rules (created through /api/alert-rules, or synced from the rules file at start), shared by every
-- collector on this database. Each change appends a row with a higher Version; reads use FINAL, so the
-- newest Version of (ProjectId, RuleId) is the rule, and Deleted = 1 marks a deleted one. Body is the
-- rule's JSON with its destination secrets. No TTL: a rule lives until it is deleted.
CREATE TABLE IF NOT EXISTS alert_rules (
    ProjectId LowCardinality(String) CODEC(ZSTD(1)),
    RuleId String CODEC(ZSTD(1)),
    Source LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    UpdatedAt DateTime64(3) CODEC(ZSTD(1)),
    Version UInt64 CODEC(ZSTD(1)),
    Deleted UInt8 CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree(Version)
ORDER BY (ProjectId, RuleId)
SETTINGS index_granularity = 8192;
