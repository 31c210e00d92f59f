SELECT count() AS users,
groupArraySortedIf({p9:UInt64})((key_,
user_,
lvl,
t1,
t2,
t3,
bd),
1)
FROM (SELECT *,
dense_rank() OVER (ORDER BY entered_ DESC,
bd ASC) AS rnk_
FROM (SELECT *,
count() OVER (PARTITION BY bd) AS entered_
FROM (SELECT user_ AS key_,
user_,
lvl,
t1,
t2,
t3,
if(bd0 = '',
'(none)',
bd0) AS bd
FROM (SELECT person AS user_,
multiIf(t1 IS NULL,
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
GROUP BY person)))
WHERE lvl >= 1))
WHERE lvl >= 2
AND if(rnk_ <= {p10:UInt32},
bd,
'Others') = {p11:String}
