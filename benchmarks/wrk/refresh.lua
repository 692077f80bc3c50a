-- Refresh with rotation: every connection follows its own chain.
-- Run with as many wrk threads as connections (-tN -cN): a thread's Lua state then
-- serves exactly one connection, and holds that connection's current refresh token.
-- BENCH_TOKENS: a file with one starting refresh token per line (at least N lines).
-- Each reply's new refresh_token is the next request's; a reply without one counts
-- as "bad" and the chain stops (its connection sends that spent token again, which
-- the server answers with an error).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local tokens = read_lines(os.getenv("BENCH_TOKENS"))

function per_thread_setup(thread, index)
   thread:set("token", tokens[index])
end

function init(args)
   for k, v in pairs(bench_headers()) do wrk.headers[k] = v end
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   return wrk.format("POST", nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
   local new = body and string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
   if status == 200 and new then
      token = new
   else
      bad = bad + 1
   end
end
