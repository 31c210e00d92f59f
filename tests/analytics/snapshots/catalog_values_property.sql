SELECT value,
count() AS n,
sum(n) OVER () AS sampled,
value != ''
AND startsWith(lowerUTF8(value),
lowerUTF8({p1:String})) AS wanted
FROM (SELECT multiIf(JSONType(properties,
{p0:String}) = 'String',
JSONExtractString(properties,
{p0:String}),
JSONType(properties,
{p0:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p0:String}),
'') AS value
FROM events
WHERE (type = {p2:String})
AND toDate32(ts) <= {p3:Date32} LIMIT {p4:UInt64})
GROUP BY value
ORDER BY wanted DESC,
n DESC,
value LIMIT {p5:UInt64}
