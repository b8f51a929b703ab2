-- wrk_common.lua — what the wrk scripts (bench/post.lua, bench/batch.lua)
-- share: thread bookkeeping, the per-thread payloads, status counting and
-- the one-line report "WRKJSON {...}" that bench/*.sh read. Loaded with
-- dofile() by each script, in every Lua state wrk makes.
local M = {}
local threads = {}

-- wrk's setup(): number the threads, keep them for done().
function M.setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

-- The common part of init(): counters, BENCH_TAG / BENCH_ORGS, 256
-- payloads of 64 random bytes as hex (made once per thread, so the
-- generator spends its CPU on requests), a JSON POST.
function M.init()
    ok, non200, msg_errors, counter = 0, 0, 0, 0
    tag = os.getenv("BENCH_TAG") or "wrk"
    norgs = tonumber(os.getenv("BENCH_ORGS") or "10")
    math.randomseed(tid * 7919)
    payloads = {}
    for i = 1, 256 do
        local b = {}
        for j = 1, 64 do b[j] = string.format("%02x", math.random(0, 255)) end
        payloads[i] = table.concat(b)
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

-- A random org id of the BENCH_ORGS, and a random payload.
function M.org() return string.format("org_%03d", math.random(0, norgs - 1)) end
function M.payload() return payloads[math.random(1, 256)] end

-- Count one answer: 200s, other statuses, and (when count_errors) the
-- per-message "error" members inside a 200.
function M.response(status, body, count_errors)
    if status ~= 200 then
        non200 = non200 + 1
        return
    end
    ok = ok + 1
    if count_errors then
        -- a plain find (memchr and memcmp in C): gsub's pattern matcher
        -- over a 100-result answer cost wrk more than poold's CPU
        local at = string.find(body, '"error"', 1, true)
        while at do
            msg_errors = msg_errors + 1
            at = string.find(body, '"error"', at + 7, true)
        end
    end
end

-- wrk's done() (in the main thread): the WRKJSON line; extra is the
-- script's own members ('"name":value,' each), written after "non200".
function M.done(summary, latency, extra)
    local okt, bad = 0, 0
    for _, t in ipairs(threads) do
        okt = okt + t:get("ok")
        bad = bad + t:get("non200")
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"ok":%d,' ..
        '"non200":%d,%s"errors":{"connect":%d,"read":%d,"write":%d,' ..
        '"timeout":%d,"status":%d},"latency":{"mean_ms":%.3f,' ..
        '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}}\n',
        summary.requests, summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6), okt, bad, extra or "",
        e.connect, e.read, e.write, e.timeout, e.status,
        latency.mean / 1000, latency:percentile(50) / 1000,
        latency:percentile(90) / 1000, latency:percentile(99) / 1000,
        latency.max / 1000))
end

-- The sum of one counter over the threads (for a script's extra members).
function M.total(name)
    local n = 0
    for _, t in ipairs(threads) do n = n + t:get(name) end
    return n
end

return M
