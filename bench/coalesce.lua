-- wrk script for bench/coalesce.sh: every request is the same GET of one
-- secret (KW_BENCH_TARGET) with one API key (KW_BENCH_KEY).
local auth = "Bearer " .. os.getenv("KW_BENCH_KEY")
local target = os.getenv("KW_BENCH_TARGET")

function request()
  return wrk.format("GET", target, { Authorization = auth })
end
