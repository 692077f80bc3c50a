-- GET the URL given to wrk (discovery, JWKS, userinfo with BENCH_AUTH="Bearer ...").
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function init(args)
   for k, v in pairs(bench_headers()) do wrk.headers[k] = v end
end
