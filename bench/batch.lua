-- batch.lua — wrk script: POST /process/batch, BENCH_BATCH messages (100)
-- of one org per request (orgs uniform over BENCH_ORGS), unique ids.
--
--   BENCH_TAG=t1 BENCH_ORGS=10 BENCH_BATCH=100 wrk -t2 -c8 -d10s -s bench/batch.lua URL
--
-- Counts 200s, non-200s and per-message errors inside 200 answers (an
-- "error" member in a result); done() prints "WRKJSON {...}".
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    ok, non200, msg_errors, counter = 0, 0, 0, 0
    tag = os.getenv("BENCH_TAG") or "wrk"
    norgs = tonumber(os.getenv("BENCH_ORGS") or "10")
    nmsg = tonumber(os.getenv("BENCH_BATCH") or "100")
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

function request()
    counter = counter + 1
    local parts = {}
    for i = 1, nmsg do
        parts[i] = string.format('{"id":"msg_%s%d_%d_%d","payload":"%s"}',
            tag, tid, counter, i, payloads[math.random(1, 256)])
    end
    local body = string.format('{"org_id":"org_%03d","messages":[%s]}',
        math.random(0, norgs - 1), table.concat(parts, ","))
    return wrk.format(nil, "/process/batch", nil, body)
end

function response(status, headers, body)
    if status == 200 then
        ok = ok + 1
        local _, e = string.gsub(body, '"error"', "")
        msg_errors = msg_errors + e
    else
        non200 = non200 + 1
    end
end

function done(summary, latency, requests)
    -- done() runs in wrk's main thread, where init() did not: no nmsg here
    local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
    local okt, bad, errs = 0, 0, 0
    for _, t in ipairs(threads) do
        okt = okt + t:get("ok")
        bad = bad + t:get("non200")
        errs = errs + t:get("msg_errors")
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"ok":%d,' ..
        '"non200":%d,"message_errors":%d,"batch":%d,"errors":{"connect":%d,' ..
        '"read":%d,"write":%d,"timeout":%d,"status":%d},"latency":{"mean_ms":%.3f,' ..
        '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}}\n',
        summary.requests, summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6), okt, bad, errs, batch,
        e.connect, e.read, e.write, e.timeout, e.status,
        latency.mean / 1000, latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000))
end
