-- post.lua — wrk script: POST /process with the seed's message shape.
--
--   BENCH_TAG=t1 BENCH_ORGS=10 wrk -t2 -c8 -d10s -s bench/post.lua URL
--
-- Ids are msg_<tag><thread>_<counter>: unique, so every request is a new
-- row. org_id is uniform over org_000 .. org_<BENCH_ORGS-1>; the payload is
-- 64 random bytes as hex (bench/wrk_common.lua). Every status is counted;
-- done() prints one line "WRKJSON {...}" for scripts.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") ..
    "wrk_common.lua")

setup = common.setup

function init(args)
    common.init()
end

function request()
    counter = counter + 1
    local body = string.format(
        '{"id":"msg_%s%d_%d","org_id":"%s","payload":"%s"}',
        tag, tid, counter, common.org(), common.payload())
    return wrk.format(nil, "/process", nil, body)
end

function response(status, headers, body)
    common.response(status, body, false)
end

function done(summary, latency, requests)
    common.done(summary, latency)
end
