SELECT if(rnk <= {p8:UInt32},
bd,
'Others') AS bucket,
sum(u1) AS u1,
sum(u2) AS u2,
quantileExactInclusiveMerge(0.5)(mp2) AS mp2,
quantileExactInclusiveMerge(0.5)(ms2) AS ms2
FROM (SELECT *,
row_number() OVER (ORDER BY u1 DESC,
bd ASC) AS rnk
FROM (SELECT bd,
sum(u1) AS u1,
sum(u2) AS u2,
quantileExactInclusiveMergeState(0.5)(mp2) AS mp2,
quantileExactInclusiveMergeState(0.5)(ms2) AS ms2
FROM cluster('analytics',
view(SELECT if(bd0 = '',
'(none)',
bd0) AS bd,
countIf(lvl >= 1) AS u1,
countIf(lvl >= 2) AS u2,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS mp2,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS ms2
FROM (SELECT lvl,
t1,
t2,
bd0
FROM (SELECT user_key,
best_.1 AS lvl,
best_.2 AS t1,
best_.3 AS t2,
best_.4 AS bd0
FROM (SELECT tupleElement(user_,
1) AS user_key,
argMin((lvl,
t1,
t2,
bd0),
(-lvl,
-ifNull(t1,
0),
ifNull(t2,
0),
bd0 = '',
bd0)) AS best_
FROM (SELECT held_ AS user_,
multiIf(t1 IS NULL,
0,
t2 IS NULL,
1,
2) AS lvl,
t1,
t2,
if(lvl >= 2,
arrayFirst(y -> y.1 = t2,
bd0).2,
'') AS bd0
FROM (SELECT held_,
minOrNullIf(toInt64(toUnixTimestamp64Milli(ts)),
m1
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p3:Int64}) AS t1,
minOrNullIf(toInt64(toUnixTimestamp64Milli(ts)),
m2) AS t2,
arraySort(groupArrayIf((toInt64(toUnixTimestamp64Milli(ts)),
bdv),
bdv != ''
AND m2)) AS bd0
FROM (SELECT (user_key,
sipHash64(multiIf(JSONType(properties,
{p6:String}) = 'String',
JSONExtractString(properties,
{p6:String}),
JSONType(properties,
{p6:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p6:String}),
''))) AS held_,
ts,
multiIf(JSONType(properties,
{p7:String}) = 'String',
JSONExtractString(properties,
{p7:String}),
JSONType(properties,
{p7:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p7:String}),
'') AS bdv,
(type = {p0:String}) AS m1,
(type = {p1:String}
AND event = {p2:String}) AS m2
FROM funnels.events_local
WHERE ts >= fromUnixTimestamp64Milli({p4:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p5:Int64},
'UTC')
AND (m1
OR m2))
GROUP BY held_))
GROUP BY user_key)))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bd))
GROUP BY bucket
ORDER BY min(rnk)
