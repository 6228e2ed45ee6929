-- wrk script for GET /api/v1/secrets/{id} (bench/secrets.sh): requests take
-- turns among the secret ids in the file named by KW_BENCH_IDS (one per
-- line) and the API keys in KW_BENCH_KEYS (space-separated).
local ids, keys = {}, {}

function init(args)
  for line in io.lines(os.getenv("KW_BENCH_IDS")) do
    table.insert(ids, "/api/v1/secrets/" .. line)
  end
  for k in string.gmatch(os.getenv("KW_BENCH_KEYS"), "%S+") do
    table.insert(keys, "Bearer " .. k)
  end
  i = math.random(#ids)
end

function request()
  i = i % #ids + 1
  return wrk.format("GET", ids[i], { Authorization = keys[i % #keys + 1] })
end
