-- POST a form (BENCH_BODY) to the URL given to wrk, with BENCH_AUTH as Authorization:
-- client_credentials at /token, introspection at /introspect.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function init(args)
   wrk.method = "POST"
   wrk.body = os.getenv("BENCH_BODY")
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   for k, v in pairs(bench_headers()) do wrk.headers[k] = v end
end
