CREATE DATABASE IF NOT EXISTS funnels ON CLUSTER 'analytics';

CREATE TABLE IF NOT EXISTS funnels.events_local ON CLUSTER 'analytics' (
    event_id String,
    type LowCardinality(String),
    event LowCardinality(String),
    user_key String,
    user_id String,
    anonymous_id String,
    ts DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    properties String,
    origin LowCardinality(String),
    device LowCardinality(String),
    browser LowCardinality(String),
    os LowCardinality(String),
    location LowCardinality(String),
    referrer String,
    direct LowCardinality(String),
    ref String,
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String),
    utm_content LowCardinality(String),
    utm_term LowCardinality(String),
    builder_codes LowCardinality(String),
    version LowCardinality(String),
    locale LowCardinality(String),
    timezone LowCardinality(String),
    page_path String,
    log_seq UInt64,
    PROJECTION names_by_day (SELECT type, event, toDate32(ts), count(), max(ts) GROUP BY type, event, toDate32(ts))
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (user_key, ts, event_id)
SETTINGS deduplicate_merge_projection_mode = 'rebuild', replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS funnels.events ON CLUSTER 'analytics' (
    event_id String,
    type LowCardinality(String),
    event LowCardinality(String),
    user_key String,
    user_id String,
    anonymous_id String,
    ts DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    properties String,
    origin LowCardinality(String),
    device LowCardinality(String),
    browser LowCardinality(String),
    os LowCardinality(String),
    location LowCardinality(String),
    referrer String,
    direct LowCardinality(String),
    ref String,
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String),
    utm_content LowCardinality(String),
    utm_term LowCardinality(String),
    builder_codes LowCardinality(String),
    version LowCardinality(String),
    locale LowCardinality(String),
    timezone LowCardinality(String),
    page_path String,
    log_seq UInt64
) ENGINE = Distributed('analytics', 'funnels', 'events_local', sipHash64(user_key));

CREATE TABLE IF NOT EXISTS funnels.identity_links ON CLUSTER 'analytics' (
    key String,
    claim SimpleAggregateFunction(min, Tuple(DateTime64(3, 'UTC'), String, String))
) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}')
ORDER BY key;

CREATE TABLE IF NOT EXISTS funnels.identity_keys_by_user ON CLUSTER 'analytics' (user String, key String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}') ORDER BY (user, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS funnels.identity_keys_by_user_mv ON CLUSTER 'analytics' TO funnels.identity_keys_by_user AS SELECT claim.3 AS user, key FROM funnels.identity_links;

CREATE MATERIALIZED VIEW IF NOT EXISTS funnels.identity_links_mv ON CLUSTER 'analytics' TO funnels.identity_links AS SELECT key, min((ts, event_id, user_id)) AS claim FROM funnels.events_local ARRAY JOIN arrayFilter(k -> k != '' AND k != user_id, [anonymous_id, if(type = 'alias' AND JSONType(properties, 'previousId') = 'String', JSONExtractString(properties, 'previousId'), '')]) AS key WHERE user_id != '' AND (anonymous_id != '' OR type = 'alias') AND (1) GROUP BY key;

CREATE TABLE IF NOT EXISTS funnels.identity_links_changes ON CLUSTER 'analytics' (writer String, generation UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}', generation) ORDER BY writer;

CREATE OR REPLACE VIEW funnels.identity_persons_source ON CLUSTER 'analytics' AS SELECT first.key AS key, if(second.user != '', second.user, first.user) AS person FROM (SELECT key, min(claim).3 AS user FROM funnels.identity_links GROUP BY key) AS first LEFT JOIN (SELECT key, min(claim).3 AS user FROM funnels.identity_links GROUP BY key) AS second ON first.user = second.key;

CREATE OR REPLACE DICTIONARY funnels.identity_persons ON CLUSTER 'analytics' (key UInt64, person UInt64) PRIMARY KEY key SOURCE(CLICKHOUSE(QUERY 'SELECT sipHash64(key) AS key, sipHash64(person) AS person FROM funnels.identity_persons_source' USER 'funnels' PASSWORD 's3cret')) LAYOUT(HASHED()) LIFETIME(MIN 30 MAX 60);

CREATE TABLE IF NOT EXISTS funnels.identify_events_local ON CLUSTER 'analytics' (user_key String, ts DateTime64(3, 'UTC'), event_id String, properties String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') PARTITION BY toYYYYMM(ts) ORDER BY (user_key, ts, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS funnels.identify_events_mv ON CLUSTER 'analytics' TO funnels.identify_events_local AS SELECT user_key, ts, event_id, properties FROM funnels.events_local WHERE type = 'identify';

CREATE TABLE IF NOT EXISTS funnels.identify_events ON CLUSTER 'analytics' (user_key String, ts DateTime64(3, 'UTC'), event_id String, properties String) ENGINE = Distributed('analytics', 'funnels', 'identify_events_local', sipHash64(user_key));

CREATE TABLE IF NOT EXISTS funnels.identity_groups ON CLUSTER 'analytics' (model String, load_id String, member UInt64, grp UInt64, group_id String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}') ORDER BY (model, load_id, member);

CREATE TABLE IF NOT EXISTS funnels.identity_groups_loads ON CLUSTER 'analytics' (model String, load_id String, generation String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}') ORDER BY (model, load_id);

CREATE OR REPLACE DICTIONARY funnels.identity_groups_members ON CLUSTER 'analytics' (key UInt64, one UInt64, many Array(UInt64)) PRIMARY KEY key SOURCE(CLICKHOUSE(QUERY 'SELECT key, if(length(groups) = 1, groups[1], 0) AS one, if(length(groups) = 1, emptyArrayUInt64(), groups) AS many FROM (SELECT sipHash64(model, member) AS key, groupUniqArray(grp) AS groups FROM funnels.identity_groups WHERE (model, load_id) IN (SELECT model, max(load_id) FROM funnels.identity_groups_loads GROUP BY model) GROUP BY key)' INVALIDATE_QUERY 'SELECT ((SELECT count() FROM funnels.identity_groups_loads), (SELECT max(load_id) FROM funnels.identity_groups_loads), (SELECT count() FROM funnels.identity_groups))' USER 'funnels' PASSWORD 's3cret')) LAYOUT(HASHED()) LIFETIME(MIN 30 MAX 60);

TRUNCATE TABLE IF EXISTS funnels.events_local ON CLUSTER 'analytics';

TRUNCATE TABLE IF EXISTS funnels.identity_links ON CLUSTER 'analytics';

TRUNCATE TABLE IF EXISTS funnels.identity_keys_by_user ON CLUSTER 'analytics';

TRUNCATE TABLE IF EXISTS funnels.identify_events_local ON CLUSTER 'analytics';

SYSTEM RELOAD DICTIONARY ON CLUSTER 'analytics' funnels.identity_persons;

SYSTEM SYNC REPLICA ON CLUSTER 'analytics' funnels.identity_groups_loads LIGHTWEIGHT;

SYSTEM SYNC REPLICA ON CLUSTER 'analytics' funnels.identity_groups LIGHTWEIGHT;

SYSTEM RELOAD DICTIONARY ON CLUSTER 'analytics' funnels.identity_groups_members
