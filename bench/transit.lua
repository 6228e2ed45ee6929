-- wrk script for transit POSTs (bench/transit.sh): the body is the file
-- named by KW_BENCH_BODY; requests take turns among the API keys in
-- KW_BENCH_KEYS (space-separated), so no one key's rate limit is reached.
local f = assert(io.open(os.getenv("KW_BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local keys = {}

function init(args)
  for k in string.gmatch(os.getenv("KW_BENCH_KEYS"), "%S+") do
    table.insert(keys, "Bearer " .. k)
  end
  i = math.random(#keys)
end

function request()
  i = i % #keys + 1
  return wrk.format("POST", nil, { Authorization = keys[i], ["Content-Type"] = "application/json" }, body)
end
