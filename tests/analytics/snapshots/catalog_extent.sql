SELECT if(count() = 0,
NULL,
toUnixTimestamp64Milli(min(ts))),
if(count() = 0,
NULL,
toUnixTimestamp64Milli(max(ts)))
FROM events
