SELECT bucket,
users,
mean,
qs,
edges,
arrayMap(k -> countEqual(bs,
k),
range(length(edges) + 1))
FROM (SELECT *,
arrayMap(k -> lo + k * intDiv(hi - lo + least(toInt64({p10:UInt32}),
hi - lo + 1),
least(toInt64({p10:UInt32}),
hi - lo + 1)),
range(toUInt64(least(toInt64({p10:UInt32}),
hi - lo + 1)) + 1)) AS edges,
arrayMap(x -> arrayCount(e -> e <= x,
edges),
ds) AS bs
FROM (SELECT bucket,
r,
ds,
length(ds) AS users,
if(users = 0,
NULL,
arraySum(ds) / users) AS mean,
arrayReduce('quantilesExactInclusive(0.25,
0.5,
0.75,
0.9,
0.99)',
ds) AS qs,
ifNull(min(if(users = 0,
NULL,
arrayMin(ds))) OVER (),
0) AS lo,
ifNull(max(if(users = 0,
NULL,
arrayMax(ds))) OVER (),
0) AS hi
FROM (SELECT if(rnk <= {p9:UInt32},
bd,
'Others') AS bucket,
arrayFlatten(groupArray(ds)) AS ds,
min(rnk) AS r
FROM (SELECT *,
row_number() OVER (ORDER BY u1 DESC,
bd ASC) AS rnk
FROM (SELECT if(bd0 = '',
'(none)',
bd0) AS bd,
count() AS u1,
groupArrayIf(assumeNotNull(t3 - t2),
lvl >= 3) AS ds
FROM (SELECT multiIf(t1 IS NULL,
0,
t2 IS NULL,
1,
t3 IS NULL,
2,
3) AS lvl,
t1,
t2,
t3,
bd0
FROM (SELECT person,
minOrNullIf(toInt64(toUnixTimestamp64Milli(ts)),
m1
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p6:Int64}) AS t1,
minOrNullIf(toInt64(toUnixTimestamp64Milli(ts)),
m2) AS t2,
minOrNullIf(toInt64(toUnixTimestamp64Milli(ts)),
m3) AS t3,
minArgMinIf(utm_source,
ts,
utm_source != '') AS bd0
FROM (SELECT dictGetOrDefault('identity_persons',
'person',
sipHash64(user_key),
sipHash64(user_key)) AS person,
ts,
utm_source,
(type = {p0:String}
AND startsWith(page_path,
{p1:String})) AS m1,
(type = {p2:String}
AND event = {p3:String}) AS m2,
(type = {p4:String}
AND event = {p5:String}) AS m3
FROM events
WHERE ts >= fromUnixTimestamp64Milli({p7:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p8:Int64},
'UTC')
AND (m1
OR m2
OR m3
OR utm_source != ''))
GROUP BY person))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bucket)))
ORDER BY r
