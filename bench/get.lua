-- GET /v1/snapshot-jobs/{id} over the ids listed in $IDS_FILE, at random.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/snapshot-jobs/" .. ids[math.random(#ids)])
end
