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
FROM (SELECT lvl,
if(lvl >= 1,
path_.2,
NULL) AS t1,
if(lvl >= 2,
path_.3,
NULL) AS t2,
if(lvl >= 3,
path_.4,
NULL) AS t3,
bd0
FROM (SELECT user_key,
multiIf(st.5 >= 0,
3,
st.2 >= 0,
2,
st.1 >= 0,
1,
0) AS lvl,
multiIf(lvl = 3,
st.5,
lvl = 2,
st.2,
lvl = 1,
st.1,
-1) AS start_,
arrayFold((acc,
x) -> (toInt64(if(bitAnd(x,
65535) < 1024,
multiIf(bitAnd(bitAnd(x,
65535),
1) != 0
AND lvl >= 3
AND acc.1 >= 1
AND acc.1 < 3,
0,
bitAnd(bitAnd(x,
65535),
2) != 0
AND lvl >= 3
AND acc.1 >= 2
AND acc.1 < 3,
1,
acc.1),
if(bitAnd(x,
65535) = 1025 + acc.1
AND acc.1 < lvl
AND if(acc.1 = 0,
bitShiftRight(x,
16) = start_,
bitShiftRight(x,
16) - start_ <= {p10:Int64}),
acc.1 + 1,
acc.1))),
if(bitAnd(x,
65535) = 1025
AND acc.1 = 0
AND bitAnd(x,
65535) = 1025 + acc.1
AND acc.1 < lvl
AND if(acc.1 = 0,
bitShiftRight(x,
16) = start_,
bitShiftRight(x,
16) - start_ <= {p10:Int64}),
bitShiftRight(x,
16),
acc.2),
if(bitAnd(x,
65535) = 1026
AND acc.1 = 1
AND bitAnd(x,
65535) = 1025 + acc.1
AND acc.1 < lvl
AND if(acc.1 = 0,
bitShiftRight(x,
16) = start_,
bitShiftRight(x,
16) - start_ <= {p10:Int64}),
bitShiftRight(x,
16),
acc.3),
if(bitAnd(x,
65535) = 1027
AND acc.1 = 2
AND bitAnd(x,
65535) = 1025 + acc.1
AND acc.1 < lvl
AND if(acc.1 = 0,
bitShiftRight(x,
16) = start_,
bitShiftRight(x,
16) - start_ <= {p10:Int64}),
bitShiftRight(x,
16),
acc.4)),
a,
(toInt64(0),
toInt64(-1),
toInt64(-1),
toInt64(-1))) AS path_,
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
x) -> (if(bitAnd(x,
65535) = 1025
AND bitShiftRight(x,
16) > acc.1,
bitShiftRight(x,
16),
acc.1),
if(bitAnd(x,
65535) = 1026
AND acc.1 >= 0
AND bitShiftRight(x,
16) - acc.1 <= {p10:Int64}
AND acc.1 > acc.2,
acc.1,
acc.2),
if(bitAnd(x,
65535) < 1024,
if(bitAnd(bitAnd(x,
65535),
1) != 0,
-1,
acc.3),
if(bitAnd(x,
65535) = 1025
AND bitShiftRight(x,
16) > acc.3,
bitShiftRight(x,
16),
acc.3)),
if(bitAnd(x,
65535) < 1024,
if(bitAnd(bitAnd(x,
65535),
3) != 0,
-1,
acc.4),
if(bitAnd(x,
65535) = 1026
AND acc.3 >= 0
AND bitShiftRight(x,
16) - acc.3 <= {p10:Int64}
AND acc.3 > acc.4,
acc.3,
acc.4)),
if(bitAnd(x,
65535) = 1027
AND acc.4 >= 0
AND bitShiftRight(x,
16) - acc.4 <= {p10:Int64}
AND acc.4 > acc.5,
acc.4,
acc.5)),
a,
(toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1),
toInt64(-1))) AS st,
tupleElement(minIf((toInt64(toUnixTimestamp64Milli(ts)),
utm_source),
utm_source != ''),
2) AS bd0
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
GROUP BY user_key)))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bucket
ORDER BY min(rnk)
