-- wrk script for bench/load.sh: POST /v1/evaluations for random sessions
-- among SESSIONS (both report shapes), three events; prints one RESULT line.
local sessions = tonumber(os.getenv("SESSIONS") or "5000")
local events = { "checkout", "account_change", "login" }

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  local n = math.random(0, sessions - 1)
  local body = string.format('{"session_id":"s-%d","event":"%s","user_id":"u-%d"}', n, events[(n % 3) + 1], n)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p95_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
