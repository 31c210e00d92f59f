SELECT if(rnk <= {p13:UInt32},
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
FROM (SELECT multiIf(st.7 >= 0,
3,
st.2 >= 0,
2,
st.1 >= 0,
1,
0) AS lvl,
if(lvl >= 1,
multiIf(lvl = 3,
st.7,
lvl = 2,
st.2,
lvl = 1,
st.1,
-1),
NULL) AS t1,
if(lvl >= 2,
multiIf(lvl = 3,
st.8,
lvl = 2,
st.3,
-1),
NULL) AS t2,
if(lvl >= 3,
multiIf(lvl = 3,
st.9,
-1),
NULL) AS t3,
bd0
FROM (SELECT user_key,
arraySort(arrayConcat(groupArrayIf(bitOr(bitShiftLeft(toInt64(toUnixTimestamp64Milli(ts)),
16),
1024 + step),
step > 0),
groupArrayIf(bitOr(bitShiftLeft(toInt64(toUnixTimestamp64Milli(ts)),
16),
xm),
xm > 0))) AS a,
arrayFold((acc,
x) -> tupleElement((bitAnd(x,
65535) = 1025
AND bitShiftRight(x,
16) > acc.1 AS m1_,
bitAnd(x,
65535) = 1026
AND acc.1 >= 0
AND bitShiftRight(x,
16) - acc.1 <= {p10:Int64}
AND acc.1 > acc.2 AS m2_,
bitAnd(x,
65535) = 1025
AND bitShiftRight(x,
16) > acc.4 AS m3_,
bitAnd(x,
65535) = 1026
AND acc.4 >= 0
AND bitShiftRight(x,
16) - acc.4 <= {p10:Int64}
AND acc.4 > acc.5 AS m4_,
bitAnd(x,
65535) = 1027
AND acc.5 >= 0
AND bitShiftRight(x,
16) - acc.5 <= {p10:Int64}
AND acc.5 > acc.7 AS m5_,
(if(m1_,
bitShiftRight(x,
16),
acc.1),
if(m2_,
acc.1,
acc.2),
if(m2_,
bitShiftRight(x,
16),
acc.3),
if(bitAnd(x,
65535) < 1024
AND bitAnd(bitAnd(x,
65535),
1) != 0,
-1,
if(m3_,
bitShiftRight(x,
16),
acc.4)),
if(bitAnd(x,
65535) < 1024
AND bitAnd(bitAnd(x,
65535),
3) != 0,
-1,
if(m4_,
acc.4,
acc.5)),
if(m4_,
bitShiftRight(x,
16),
acc.6),
if(m5_,
acc.5,
acc.7),
if(m5_,
acc.6,
acc.8),
if(m5_,
bitShiftRight(x,
16),
acc.9))),
6),
a,
(toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1))) AS st,
minArgMinIf(utm_source,
ts,
utm_source != '') AS bd0
FROM (SELECT user_key,
ts,
utm_source,
multiIf((type = {p0:String})
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p9:Int64},
1,
(type = {p1:String}
AND event = {p2:String}),
2,
(type = {p3:String}
AND event = {p4:String}),
3,
0) AS step,
toInt64((type = {p5:String}
AND event = {p6:String})) * 1 + toInt64((type = {p7:String}
AND page_path = {p8:String})) * 2 AS xm
FROM events
WHERE ts >= fromUnixTimestamp64Milli({p11:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p12:Int64},
'UTC')
AND (step > 0
OR xm > 0
OR utm_source != ''))
GROUP BY user_key))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bucket
ORDER BY min(rnk)
