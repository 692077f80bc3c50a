-- The SSO hop: a browser with a session asks for a code for a portal.
-- BENCH_HOPS: a file of "cookie<TAB>path?query" lines, taken in order (one thread:
-- -t1), so each request is a (session, portal) pair that has not hopped before as
-- long as the file has more lines than the run makes requests.  A redirect without
-- "code=" in its Location counts as "bad" (a login page, an error redirect).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local hops = {}
for _, line in ipairs(read_lines(os.getenv("BENCH_HOPS"))) do
   local cookie, path = string.match(line, "^([^\t]*)\t(.*)$")
   table.insert(hops, {cookie, path})
end
-- BENCH_HOPS_START: lines already used by earlier runs (run.py), so each run goes on.
local i = tonumber(os.getenv("BENCH_HOPS_START") or "0")

function request()
   i = i + 1
   local hop = hops[(i - 1) % #hops + 1]
   return wrk.format("GET", hop[2], {["Cookie"] = hop[1]})
end

function response(status, headers, body)
   local location = headers["Location"] or headers["location"] or ""
   if (status ~= 302 and status ~= 303) or not string.find(location, "code=", 1, true) then
      bad = bad + 1
   end
end
