SELECT type,
sum(n) AS total,
max(last_ms),
count()
FROM (SELECT type,
event,
count() AS n,
toUnixTimestamp64Milli(max(ts)) AS last_ms
FROM events
WHERE toDate32(ts) >= {p0:Date32}
GROUP BY type,
event)
GROUP BY type
ORDER BY total DESC,
type LIMIT 1000
