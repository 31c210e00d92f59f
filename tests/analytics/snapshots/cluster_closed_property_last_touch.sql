SELECT if(rnk <= {p10:UInt32},
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
FROM (SELECT bd,
sum(u1) AS u1,
sum(u2) AS u2,
sum(u3) AS u3,
quantileExactInclusiveMergeState(0.5)(mp2) AS mp2,
quantileExactInclusiveMergeState(0.5)(mp3) AS mp3,
quantileExactInclusiveMergeState(0.5)(ms2) AS ms2,
quantileExactInclusiveMergeState(0.5)(ms3) AS ms3
FROM cluster('analytics',
view(SELECT if(bd0 = '',
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
FROM (SELECT multiIf(st.3 >= 0,
3,
st.2 >= 0,
2,
st.1 >= 0,
1,
0) AS lvl,
if(lvl >= 1,
multiIf(lvl = 3,
st.3,
lvl = 2,
st.2,
lvl = 1,
st.1,
-1),
NULL) AS t1,
if(lvl >= 2,
bitShiftRight(arrayFirst(x -> bitAnd(x,
15) = 2
AND bitShiftRight(x,
4) >= t1,
a),
4),
NULL) AS t2,
if(lvl >= 3,
bitShiftRight(arrayFirst(x -> bitAnd(x,
15) = 3
AND bitShiftRight(x,
4) >= t2,
a),
4),
NULL) AS t3,
bd0
FROM (SELECT user_key,
arraySort(groupArrayIf(bitOr(bitShiftLeft(toInt64(toUnixTimestamp64Milli(ts)),
4),
step),
step > 0)) AS a,
arrayFold((acc,
x) -> (if(bitAnd(x,
15) = 1
AND bitShiftRight(x,
4) > acc.1,
bitShiftRight(x,
4),
acc.1),
if(bitAnd(x,
15) = 2
AND acc.1 >= 0
AND bitShiftRight(x,
4) - acc.1 <= {p6:Int64}
AND acc.1 > acc.2,
acc.1,
acc.2),
if(bitAnd(x,
15) = 3
AND acc.2 >= 0
AND bitShiftRight(x,
4) - acc.2 <= {p6:Int64}
AND acc.2 > acc.3,
acc.2,
acc.3)),
a,
(toInt64(-1),
toInt64(-1),
toInt64(-1))) AS st,
maxArgMaxIf(bdv,
ts,
bdv != '') AS bd0
FROM (SELECT user_key,
ts,
multiIf(JSONType(properties,
{p9:String}) = 'String',
JSONExtractString(properties,
{p9:String}),
JSONType(properties,
{p9:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p9:String}),
'') AS bdv,
multiIf((type = {p0:String})
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p5:Int64},
1,
(type = {p1:String}
AND event = {p2:String}),
2,
(type = {p3:String}
AND event = {p4:String}),
3,
0) AS step
FROM funnels.events_local
WHERE ts >= fromUnixTimestamp64Milli({p7:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p8:Int64},
'UTC')
AND (step > 0
OR bdv != ''))
GROUP BY user_key))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bd))
GROUP BY bucket
ORDER BY min(rnk)
