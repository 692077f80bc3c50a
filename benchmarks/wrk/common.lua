-- Shared by every scenario script: one JSON line at the end, read by benchmarks/run.py.
--   BENCH {"requests":N,"seconds":S,"p50_us":...,"p99_us":...,"errors":N,"bad":N}
-- "errors": socket errors and HTTP status >= 400 (wrk's own counts); "bad": responses
-- a scenario script judged wrong (no code in a redirect, no refresh token in a reply).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   if per_thread_setup then per_thread_setup(thread, #threads) end
end

bad = 0

function done(summary, latency, requests)
   local e = summary.errors
   local bad_total = 0
   for _, t in ipairs(threads) do bad_total = bad_total + (t:get("bad") or 0) end
   io.write(string.format(
      'BENCH {"requests":%d,"seconds":%.3f,"p50_us":%d,"p99_us":%d,"errors":%d,"bad":%d}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout, bad_total))
end

-- Extra request headers from the environment: BENCH_AUTH (Authorization), BENCH_COOKIE.
function bench_headers()
   local h = {}
   local auth = os.getenv("BENCH_AUTH")
   if auth and auth ~= "" then h["Authorization"] = auth end
   local cookie = os.getenv("BENCH_COOKIE")
   if cookie and cookie ~= "" then h["Cookie"] = cookie end
   return h
end

function read_lines(path)
   local lines = {}
   for line in io.lines(path) do
      if line ~= "" then table.insert(lines, line) end
   end
   return lines
end
