-- Heartbeats of the collectors' alert engines, to choose the one that evaluates window rules
-- (alert/leader.py): each engine writes its InstanceId and ClickHouse's time every few seconds, Stopped = 1
-- when it stops cleanly. Not per project: one engine serves every project. A heartbeat matters for seconds;
-- rows of collectors gone for a day are dropped.
CREATE TABLE IF NOT EXISTS alert_heartbeats (
    InstanceId String CODEC(ZSTD(1)),
    Timestamp DateTime64(3) CODEC(Delta(8), ZSTD(1)),
    Stopped UInt8 CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree(Timestamp)
ORDER BY InstanceId
TTL toDateTime(Timestamp) + toIntervalDay(1)
SETTINGS index_granularity = 8192;
