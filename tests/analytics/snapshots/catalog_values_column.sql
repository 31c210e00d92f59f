SELECT value,
count() AS n,
sum(n) OVER () AS sampled,
value != '' AS wanted
FROM (SELECT toString(device) AS value
FROM events
WHERE (type = {p0:String}
AND event = {p1:String}) LIMIT {p2:UInt64})
GROUP BY value
ORDER BY wanted DESC,
n DESC,
value LIMIT {p3:UInt64}
