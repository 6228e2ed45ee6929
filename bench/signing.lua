-- wrk script for signed requests (bench/signing.sh): every request is
-- signed here, as DESIGN 5.6 writes it, with a fresh nonce: HMAC-SHA256
-- keyed with the secret (KW_BENCH_SECRET) over
--   METHOD \n TARGET \n TIMESTAMP \n NONCE \n hex(SHA-256(body))
-- for GET KW_BENCH_TARGET (empty body), taking turns among the key ids in
-- KW_BENCH_KIDS and their secrets in KW_BENCH_SECRETS (space-separated,
-- so no one key's rate limit is what is measured). SHA-256
-- is written out below (LuaJIT's bit library): wrk has no crypto.
local bit = require("bit")
local band, bor, bxor, bnot, rshift, lshift, ror = bit.band, bit.bor, bit.bxor, bit.bnot, bit.rshift, bit.lshift, bit.ror
local tobit = bit.tobit

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2 }
for i = 1, 64 do K[i] = tobit(K[i]) end

local function sha256(msg)
  local len = #msg
  msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64)
  local bits = len * 8
  msg = msg .. string.char(0, 0, 0, 0, band(rshift(bits, 24), 255), band(rshift(bits, 16), 255),
    band(rshift(bits, 8), 255), band(bits, 255))
  local h0, h1, h2, h3 = tobit(0x6a09e667), tobit(0xbb67ae85), tobit(0x3c6ef372), tobit(0xa54ff53a)
  local h4, h5, h6, h7 = tobit(0x510e527f), tobit(0x9b05688c), tobit(0x1f83d9ab), tobit(0x5be0cd19)
  local w = {}
  for off = 1, #msg, 64 do
    for i = 0, 15 do
      local a, b, c, d = msg:byte(off + i * 4, off + i * 4 + 3)
      w[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
      local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end
    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = tobit(h + S1 + ch + K[i + 1] + w[i])
      local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      local t2 = tobit(S0 + maj)
      h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
    end
    h0, h1, h2, h3 = tobit(h0 + a), tobit(h1 + b), tobit(h2 + c), tobit(h3 + d)
    h4, h5, h6, h7 = tobit(h4 + e), tobit(h5 + f), tobit(h6 + g), tobit(h7 + h)
  end
  local out = {}
  for _, v in ipairs({ h0, h1, h2, h3, h4, h5, h6, h7 }) do
    out[#out + 1] = string.char(band(rshift(v, 24), 255), band(rshift(v, 16), 255), band(rshift(v, 8), 255), band(v, 255))
  end
  return table.concat(out)
end

local function tohex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function hmac_sha256(key, msg)
  if #key > 64 then key = sha256(key) end
  key = key .. string.rep("\0", 64 - #key)
  local ipad = key:gsub(".", function(c) return string.char(bxor(c:byte(), 0x36)) end)
  local opad = key:gsub(".", function(c) return string.char(bxor(c:byte(), 0x5c)) end)
  return sha256(opad .. sha256(ipad .. msg))
end

-- The scheme's own check, once per thread: RFC 4231 test case 2.
assert(tohex(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")

local kids, secrets = {}, {}
for k in string.gmatch(os.getenv("KW_BENCH_KIDS"), "%S+") do kids[#kids + 1] = k end
for k in string.gmatch(os.getenv("KW_BENCH_SECRETS"), "%S+") do secrets[#secrets + 1] = k end
local target = os.getenv("KW_BENCH_TARGET")
local empty_hash = tohex(sha256(""))
local counter = 0
local prefix

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end

function request()
  counter = counter + 1
  local ts = string.format("%d", os.time() * 1000)
  local nonce = string.format("%s-%012d", prefix, counter)
  local canonical = "GET\n" .. target .. "\n" .. ts .. "\n" .. nonce .. "\n" .. empty_hash
  local i = counter % #kids + 1
  local sig = "kid=" .. kids[i] .. ";hmac-sha256=" .. tohex(hmac_sha256(secrets[i], canonical))
  return wrk.format("GET", target, { ["X-Timestamp"] = ts, ["X-Nonce"] = nonce, ["X-Signature"] = sig })
end
