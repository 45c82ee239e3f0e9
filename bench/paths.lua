-- GET one of the paths listed in $PATHS_FILE, at random, with the bearer token $TOKEN.
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
math.randomseed(os.time() + os.clock() * 1e6)
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
