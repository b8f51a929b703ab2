-- post.lua — wrk script: POST /process with the seed's message shape.
--
--   BENCH_TAG=t1 BENCH_ORGS=10 wrk -t2 -c8 -d10s -s bench/post.lua URL
--
-- Ids are msg_<tag><thread>_<counter>: unique, so every request is a new
-- row. org_id is uniform over org_000 .. org_<BENCH_ORGS-1>; the payload is
-- 64 random bytes as hex (drawn from 256 pre-generated per thread, so the
-- generator spends its CPU on requests, not on random bytes). Every status
-- is counted; done() prints one line "WRKJSON {...}" for scripts.
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    ok, non200, counter = 0, 0, 0
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

function request()
    counter = counter + 1
    local body = string.format(
        '{"id":"msg_%s%d_%d","org_id":"org_%03d","payload":"%s"}',
        tag, tid, counter, math.random(0, norgs - 1),
        payloads[math.random(1, 256)])
    return wrk.format(nil, "/process", nil, body)
end

function response(status, headers, body)
    if status == 200 then ok = ok + 1 else non200 = non200 + 1 end
end

function done(summary, latency, requests)
    local okt, bad = 0, 0
    for _, t in ipairs(threads) do
        okt = okt + t:get("ok")
        bad = bad + t:get("non200")
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"ok":%d,' ..
        '"non200":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
        '"timeout":%d,"status":%d},"latency":{"mean_ms":%.3f,' ..
        '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}}\n',
        summary.requests, summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6), okt, bad,
        e.connect, e.read, e.write, e.timeout, e.status,
        latency.mean / 1000, latency:percentile(50) / 1000,
        latency:percentile(90) / 1000, latency:percentile(99) / 1000,
        latency.max / 1000))
end
