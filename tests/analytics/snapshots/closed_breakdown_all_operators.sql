SELECT if(rnk <= {p26:UInt32},
bd,
'Others') AS bucket,
sum(u1) AS u1,
sum(u2) AS u2,
quantileExactInclusiveMerge(0.5)(mp2) AS mp2,
quantileExactInclusiveMerge(0.5)(ms2) AS ms2
FROM (SELECT *,
row_number() OVER (ORDER BY u1 DESC,
bd ASC) AS rnk
FROM (SELECT if(bd0 = '',
'(none)',
bd0) AS bd,
countIf(lvl >= 1) AS u1,
countIf(lvl >= 2) AS u2,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS mp2,
quantileExactInclusiveStateIf(0.5)(t2 - t1,
lvl >= 2) AS ms2
FROM (SELECT multiIf(st.2 >= 0,
2,
st.1 >= 0,
1,
0) AS lvl,
if(lvl >= 1,
multiIf(lvl = 2,
st.2,
lvl = 1,
st.1,
-1),
NULL) AS t1,
if(lvl >= 2,
arrayFirst(x -> x.2 = 2
AND x.1 >= t1,
a).1,
NULL) AS t2,
bd0
FROM (SELECT user_key,
arraySort(groupArrayIf((toInt64(toUnixTimestamp64Milli(ts)),
toUInt8(step)),
step > 0)) AS a,
arrayFold((acc,
x) -> (if(x.2 = 1
AND x.1 > acc.1,
x.1,
acc.1),
if(x.2 = 2
AND acc.1 >= 0
AND x.1 - acc.1 <= {p23:Int64}
AND acc.1 > acc.2,
acc.1,
acc.2)),
arrayFilter((x,
i) -> NOT ((x.2 > 1
AND a[i - 1].2 = x.2)
OR (x.2 = 1
AND a[i + 1].2 = 1)),
a,
arrayEnumerate(a)),
(toInt64(-1),
toInt64(-1))) AS st,
tupleElement(minIf((toInt64(toUnixTimestamp64Milli(ts)),
device),
device != ''),
2) AS bd0
FROM (SELECT user_key,
ts,
device,
multiIf((type = {p0:String}
AND device = {p1:String}
AND utm_source != {p2:String}
AND multiIf(JSONType(properties,
{p3:String}) = 'String',
JSONExtractString(properties,
{p3:String}),
JSONType(properties,
{p3:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p3:String}),
'') IN ({p4:String},
{p5:String})
AND multiIf(JSONType(properties,
{p6:String}) = 'String',
JSONExtractString(properties,
{p6:String}),
JSONType(properties,
{p6:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p6:String}),
'') NOT IN ({p7:String},
{p8:String})
AND startsWith(page_path,
{p9:String})
AND endsWith(multiIf(JSONType(properties,
{p10:String}) = 'String',
JSONExtractString(properties,
{p10:String}),
JSONType(properties,
{p10:String}) IN ('Int64',
'UInt64',
'Bool'),
JSONExtractRaw(properties,
{p10:String}),
''),
{p11:String})
AND position(utm_campaign,
{p12:String}) > 0)
AND toInt64(toUnixTimestamp64Milli(ts)) <= {p22:Int64},
1,
(type = {p13:String}
AND event = {p14:String}
AND ifNull(multiIf(JSONType(properties,
{p15:String}) IN ('Int64',
'UInt64',
'Double'),
JSONExtractFloat(properties,
{p15:String}),
JSONType(properties,
{p15:String}) = 'String',
if(match(JSONExtractString(properties,
{p15:String}),
'^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$'),
toFloat64OrNull(JSONExtractString(properties,
{p15:String})),
NULL),
NULL) > {p16:Float64},
0)
AND ifNull(multiIf(JSONType(properties,
{p17:String}) IN ('Int64',
'UInt64',
'Double'),
JSONExtractFloat(properties,
{p17:String}),
JSONType(properties,
{p17:String}) = 'String',
if(match(JSONExtractString(properties,
{p17:String}),
'^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$'),
toFloat64OrNull(JSONExtractString(properties,
{p17:String})),
NULL),
NULL) < {p18:Float64},
0)
AND ifNull(if(match(version,
'^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$'),
toFloat64OrNull(version),
NULL) >= {p19:Float64},
0)
AND ifNull(multiIf(JSONType(properties,
{p20:String}) IN ('Int64',
'UInt64',
'Double'),
JSONExtractFloat(properties,
{p20:String}),
JSONType(properties,
{p20:String}) = 'String',
if(match(JSONExtractString(properties,
{p20:String}),
'^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$'),
toFloat64OrNull(JSONExtractString(properties,
{p20:String})),
NULL),
NULL) <= {p21:Float64},
0)),
2,
0) AS step
FROM events
WHERE ts >= fromUnixTimestamp64Milli({p24:Int64},
'UTC')
AND ts <= fromUnixTimestamp64Milli({p25:Int64},
'UTC')
AND (step > 0
OR device != ''))
GROUP BY user_key))
WHERE lvl >= 1
GROUP BY bd))
GROUP BY bucket
ORDER BY min(rnk)
