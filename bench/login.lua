-- wrk script for POST /api/v1/auth/login (bench/tokens.sh): a fresh subject
-- on every request, and a count of answers other than 200, so a run of
-- errors is never read as throughput. The API key comes from
-- -H "Authorization: Bearer kw_...". Prints one line at the end:
--   login ok=N non200=M ok_per_sec=R codes=401:3,500:1 first_error=...
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  n, ok, bad, codes, first_error = 0, 0, 0, {}, ""
end

function request()
  n = n + 1
  -- Subjects differ across threads too: one family per login, as in production.
  return wrk.format(nil, nil, nil, string.format('{"subject":"user-%d-%d","role":"track1"}', id, n))
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    return
  end
  bad = bad + 1
  codes[status] = (codes[status] or 0) + 1
  if first_error == "" then
    first_error = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, all, first = 0, 0, {}, ""
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
    for code, count in pairs(t:get("codes")) do
      all[code] = (all[code] or 0) + count
    end
    if first == "" then
      first = t:get("first_error")
    end
  end
  local list = {}
  for code, count in pairs(all) do
    table.insert(list, code .. ":" .. count)
  end
  io.write(string.format("login ok=%d non200=%d ok_per_sec=%.1f codes=%s first_error=%s\n", total_ok, total_bad,
    total_ok / (summary.duration / 1e6), table.concat(list, ","), (string.gsub(first, "\n", " "))))
end
