SELECT type,
event,
count() AS n,
toUnixTimestamp64Milli(max(ts)) AS last_ms
FROM events
WHERE toDate32(ts) >= {p0:Date32}
AND toDate32(ts) <= {p1:Date32}
AND type = {p2:String}
AND positionCaseInsensitiveUTF8(event,
{p3:String}) > 0
GROUP BY type,
event
ORDER BY n DESC,
type,
event LIMIT {p4:UInt64}
