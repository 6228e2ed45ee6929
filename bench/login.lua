-- wrk script for POST /api/v1/auth/login (bench/tokens.sh): a fresh subject
-- on every request (one family per login, as in production). Answers other
-- than 2xx are counted by wrk itself (summary.errors.status), so a run of
-- errors is never read as throughput; there is no response() callback,
-- which would make wrk parse every answer and take CPU from the service.
-- The API key comes from -H "Authorization: Bearer kw_...". Prints:
--   login ok=N non200=M ok_per_sec=R
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  n = 0
end

function request()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{"subject":"user-%d-%d","role":"track1"}', id, n))
end

function done(summary, latency, requests)
  local bad = summary.errors.status
  local ok = summary.requests - bad
  io.write(string.format("login ok=%d non200=%d ok_per_sec=%.1f\n", ok, bad, ok / (summary.duration / 1e6)))
end
