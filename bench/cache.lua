-- wrk script for bench/cache.py: dashboard pollers of the stats endpoints.
--
-- Run with one connection per thread (-tN -cN), so that each thread's
-- answers come back in the order of its requests and an answer's path is
-- the one last requested. Each thread polls the paths given after `--`
-- round-robin, sends the API token from PERFHUB_BENCH_TOKEN (from the
-- environment, never on the command line) and, like a dashboard,
-- If-None-Match with the ETag it last saw for the path.
--
-- done() prints one line, "cache-wrk: <JSON>": answers by status and by
-- X-PerfHub-Cache state, errors, and latency percentiles.

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("offset", #threads)
end

-- Per thread (each wrk thread runs its own Lua state); globals, so that
-- done() can read them with thread:get().
statuses = {}
states = {}
local paths = {}
local etags = {}
local counter = 0
local current
local token = os.getenv("PERFHUB_BENCH_TOKEN") or ""

function init(args)
   for _, path in ipairs(args) do
      paths[#paths + 1] = path
   end
   counter = offset or 0
end

function request()
   counter = counter + 1
   current = paths[(counter % #paths) + 1]
   local headers = { ["Authorization"] = "Bearer " .. token, ["Accept"] = "application/json" }
   if etags[current] then
      headers["If-None-Match"] = etags[current]
   end
   return wrk.format("GET", current, headers)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local state = headers["X-PerfHub-Cache"] or "none"
   states[state] = (states[state] or 0) + 1
   if headers["ETag"] then
      etags[current] = headers["ETag"]
   end
end

local function merged(name)
   local totals = {}
   for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get(name)) do
         totals[key] = (totals[key] or 0) + count
      end
   end
   local parts = {}
   for key, count in pairs(totals) do
      parts[#parts + 1] = string.format('"%s":%d', key, count)
   end
   return table.concat(parts, ",")
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format('cache-wrk: {"duration_us":%d,"requests":%d,"statuses":{%s},"states":{%s},'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
      summary.duration, summary.requests, merged("statuses"), merged("states"),
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
