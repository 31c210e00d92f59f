SELECT if(rnk <= {p9:UInt32},
bd,
'Others') AS bucket,
sum(u1) AS u1,
sum(u2) AS u2,
sum(u3) AS u3,
quantileExactInclusiveMerge(0.5)(mp2) AS mp2,
quantileExactInclusiveMerge(0.5)(mp3) AS mp3,
quantileExactInclusiveMerge(0.5)(ms2) AS ms2,
quantileExactInclusiveMerge(0.5)(ms3) AS ms3
FROM (SELECT *,
row_number() OVER (ORDER BY u1 DESC,
bd ASC) AS rnk
FROM (SELECT if(bd0 = '',
'(none)',
bd0) AS bd,
countIf(lvl >= 1) AS u1,
countIf(lvl >= 2) AS u2,
countIf(lvl >= 3) AS u3,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS mp2,
quantileExactInclusiveStateIf(0.5)(t3 - t2,
lvl >= 3) AS mp3,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS ms2,
quantileExactInclusiveStateIf(0.5)(t3 - t1,
lvl >= 3) AS ms3
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
GROUP BY bucket
ORDER BY min(rnk)
