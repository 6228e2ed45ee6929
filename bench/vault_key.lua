-- wrk script for GET /api/v1/me/encryption-vault/key (bench/vault.sh): each
-- request is sent by one of many users, in turn, with that user's access
-- token (one per line in the file named by KW_BENCH_TOKENS). Non-2xx
-- answers are counted by wrk itself; there is no response() callback,
-- which would make wrk parse every answer and take CPU from the service.
local tokens = {}

function init(args)
  for line in io.lines(os.getenv("KW_BENCH_TOKENS")) do
    table.insert(tokens, "Bearer " .. line)
  end
  i = math.random(#tokens)
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/v1/me/encryption-vault/key", { Authorization = tokens[i] })
end
