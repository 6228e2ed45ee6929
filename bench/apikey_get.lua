-- wrk script: GET KW_BENCH_TARGET, taking turns among the API keys in
-- KW_BENCH_KEYS (space-separated): the yardstick of bench/signing.sh.
local keys = {}
for k in string.gmatch(os.getenv("KW_BENCH_KEYS"), "%S+") do keys[#keys + 1] = "Bearer " .. k end
local target = os.getenv("KW_BENCH_TARGET")
local i = 0

function request()
  i = i % #keys + 1
  return wrk.format("GET", target, { Authorization = keys[i] })
end
