-- wrk script for bench/ingest.py: beacons shaped as static/perfhub/rum.js
-- sends them (five metrics with attribution, text/plain), each metric with
-- an id of its own. A repeated id would be counted once by the server (each
-- site and metric id is stored once), which would hide a lost metric.
--
-- Ids have web-vitals' shape, v6-<page load in ms>-<13 digits>; the digits
-- are the thread's number, the thread's metric counter and a random tail,
-- so no id repeats within a run, and the time in front keeps runs apart.
--
-- done() prints one line, "ingest-wrk: <JSON>", with what wrk's own summary
-- lacks: the answers by status, the metrics their bodies accepted, the
-- requests sent, and latency percentiles.

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("thread_number", #threads)
end

-- Per thread (each wrk thread runs its own Lua state); globals, so that
-- done() can read them with thread:get().
sent = 0
accepted = 0
statuses = {}
local counter = 0

wrk.method = "POST"
-- What Chrome sends with navigator.sendBeacon(url, text): no preflight.
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["Origin"] = "https://shop.example.com"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
   .. "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

-- {path format, route, weight}, as apps/vitals/management/commands/vitals_demo.py.
local ROUTES = {
   { "/", "/", 30 },
   { "/products/%d?ref=mail", "/products/:id", 35 },
   { "/search?q=shoes", "/search", 12 },
   { "/cart", "/cart", 8 },
   { "/checkout", "/checkout", 5 },
   { "/blog/post-%d", "/blog/:slug", 10 },
}
local NAVIGATION_TYPES = { { "navigate", 78 }, { "reload", 5 }, { "back-forward-cache", 10 }, { "prerender", 4 },
   { "back-forward", 3 } }
local CONNECTIONS = { { "4g", 85 }, { "3g", 12 }, { "2g", 3 } }
-- Log-normal medians and spreads, and web-vitals' thresholds (DESIGN.md).
local METRICS = {
   { "LCP", 1900, 0.55, 2500, 4000 },
   { "INP", 110, 0.8, 200, 500 },
   { "CLS", 0.04, 0.9, 0.1, 0.25 },
   { "FCP", 1150, 0.5, 1800, 3000 },
   { "TTFB", 450, 0.6, 800, 1800 },
}

local function pick(choices)
   local total = 0
   for _, choice in ipairs(choices) do
      total = total + choice[#choice]
   end
   local at = math.random() * total
   for _, choice in ipairs(choices) do
      at = at - choice[#choice]
      if at <= 0 then
         return choice
      end
   end
   return choices[#choices]
end

local function lognormal(median, sigma)
   local u1, u2 = 1 - math.random(), math.random()
   return median * math.exp(sigma * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2))
end

local function rating(value, good, poor)
   if value <= good then
      return "good"
   elseif value <= poor then
      return "needs-improvement"
   end
   return "poor"
end

local function uuid()
   return string.format("%08x-%04x-4%03x-%04x-%04x%08x", math.random(0, 0x7fffffff), math.random(0, 0xffff),
      math.random(0, 0xfff), 0x8000 + math.random(0, 0x3fff), math.random(0, 0xffff), math.random(0, 0x7fffffff))
end

local function ms(low, high)
   return math.random(low, high)
end

-- The attribution fields rum.js keeps, per metric.
local function attribution(name, path)
   if name == "LCP" then
      return string.format('{"target":"main > img.hero","url":"https://cdn.example.com%s/hero.jpg",'
         .. '"timeToFirstByte":%d,"resourceLoadDelay":%d,"resourceLoadDuration":%d,"elementRenderDelay":%d}',
         (path:gsub("%?.*", "")), ms(150, 900), ms(0, 400), ms(100, 1500), ms(10, 300))
   elseif name == "INP" then
      return string.format('{"interactionTarget":"button.add-to-cart","interactionType":"pointer",'
         .. '"inputDelay":%d,"processingDuration":%d,"presentationDelay":%d,"loadState":"complete",'
         .. '"longestScriptURL":"https://shop.example.com/static/app.3f9c2a.js",'
         .. '"longestScriptInvoker":"BUTTON.add-to-cart.onclick","longestScriptDuration":%d,'
         .. '"longestScriptSubpart":"processing-duration"}', ms(1, 60), ms(10, 200), ms(5, 80), ms(10, 150))
   elseif name == "CLS" then
      return string.format('{"largestShiftTarget":"div.ad-slot","largestShiftValue":%.4f,"largestShiftTime":%d,'
         .. '"loadState":"dom-content-loaded"}', math.random() * 0.1, ms(200, 4000))
   elseif name == "FCP" then
      return string.format('{"timeToFirstByte":%d,"firstByteToFCP":%d,"loadState":"dom-interactive"}',
         ms(150, 900), ms(200, 1500))
   end
   return string.format('{"waitingDuration":%d,"cacheDuration":%d,"dnsDuration":%d,"connectionDuration":%d,'
      .. '"requestDuration":%d,"serverTiming":{"db":%.1f,"cache":%.1f,"app":%.1f}}', ms(0, 20), ms(0, 5),
      ms(0, 40), ms(0, 80), ms(100, 700), math.random() * 40, math.random() * 5, math.random() * 150)
end

function init(args)
   math.randomseed(os.time() * 1000 + thread_number)
end

function request()
   local route = pick(ROUTES)
   local path = string.format(route[1], math.random(1, 500))
   local sent_at = os.time() * 1000 + math.random(0, 999)
   local page_ms = sent_at - math.random(2000, 30000)
   local navigation = pick(NAVIGATION_TYPES)[1]
   local parts = {}
   for index, metric in ipairs(METRICS) do
      local name = metric[1]
      local value
      if name == "CLS" and math.random() < 0.6 then
         value = 0
      else
         value = lognormal(metric[2], metric[3])
      end
      counter = counter + 1
      local id = string.format("v6-%.0f-%02d%08d%03d", page_ms, thread_number % 100, counter, math.random(0, 999))
      local number = name == "CLS" and string.format("%.4f", value) or string.format("%.1f", value)
      parts[index] = string.format('{"name":"%s","value":%s,"delta":%s,"id":"%s","rating":"%s",'
         .. '"navigationType":"%s","attribution":%s}', name, number, number, id,
         rating(value, metric[4], metric[5]), navigation, attribution(name, path))
   end
   local body = string.format('{"v":1,"pageview":"%s","url":"https://shop.example.com%s","route":"%s",'
      .. '"release":"2026.11.27-abc123","sample_rate":1,"connection":"%s","sent_at":%.0f,"metrics":[%s]}',
      uuid(), path, route[2], pick(CONNECTIONS)[1], sent_at, table.concat(parts, ","))
   sent = sent + 1
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 202 then
      accepted = accepted + (tonumber(body:match('"accepted":%s*(%d+)')) or 0)
   end
end

function done(summary, latency, requests)
   local total_sent, total_accepted, by_status = 0, 0, {}
   for _, thread in ipairs(threads) do
      total_sent = total_sent + thread:get("sent")
      total_accepted = total_accepted + thread:get("accepted")
      for code, count in pairs(thread:get("statuses")) do
         by_status[code] = (by_status[code] or 0) + count
      end
   end
   local codes = {}
   for code, count in pairs(by_status) do
      codes[#codes + 1] = string.format('"%d":%d', code, count)
   end
   local errors = summary.errors
   io.write(string.format('ingest-wrk: {"duration_us":%d,"requests":%d,"sent":%d,"accepted_metrics":%d,'
      .. '"statuses":{%s},"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
      summary.duration, summary.requests, total_sent, total_accepted, table.concat(codes, ","),
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
