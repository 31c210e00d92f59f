SELECT count() AS users,
groupArraySortedIf({p11:UInt64})((key_,
user_,
lvl,
t1,
t2,
t3,
bd),
1)
FROM (SELECT sipHash64(user_) AS key_,
user_,
lvl,
t1,
t2,
t3,
if(bd0 = '',
'(none)',
bd0) AS bd
FROM (SELECT user_key AS user_,
multiIf(st.3 >= 0,
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
4) - acc.1 <= {p8:Int64}
AND acc.1 > acc.2,
acc.1,
acc.2),
if(bitAnd(x,
15) = 3
AND acc.2 >= 0
AND bitShiftRight(x,
4) - acc.2 <= {p8:Int64}
AND acc.2 > acc.3,
acc.2,
acc.3)),
a,
(toInt64(-1),
toInt64(-1),
toInt64(-1))) AS st,
'' AS bd0
FROM (SELECT user_key,
ts,
multiIf((type = {p0:String})
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p7:Int64},
1,
(type = {p1:String}
AND event = {p2:String}),
2,
(type = {p3:String}
AND event = {p4:String}
AND multiIf(JSONType(properties,
{p5:String}) = 'String',
JSONExtractString(properties,
{p5:String}),
JSONType(properties,
{p5:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p5:String}),
'') = {p6:String}),
3,
0) AS step
FROM events
WHERE ts >= fromUnixTimestamp64Milli({p9:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p10:Int64},
'UTC')
AND (step > 0))
GROUP BY user_key)))
WHERE lvl >= 2
