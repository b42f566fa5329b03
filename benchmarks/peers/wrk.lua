-- wrk script for the peer comparison (used with --load wrk).
-- POSTs the JSON body in the file named by $BODY on every request and, at the
-- end, prints one line: RESULT {json} with the same fields `inferd bench` reports.
-- requests_per_second counts successful (2xx/3xx) answers only.
local f = assert(io.open(assert(os.getenv("BODY"), "BODY must name the request body file"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  local failed = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'RESULT {"requests": %d, "successes": %d, "errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"duration_us": %d, "requests_per_second": %.1f, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.requests - e.status, failed, e.status, e.timeout,
    summary.duration, (summary.requests - e.status) / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
