-- batch.lua — wrk script: POST /process/batch, BENCH_BATCH messages (100)
-- of one org per request (orgs uniform over BENCH_ORGS), unique ids.
--
--   BENCH_TAG=t1 BENCH_ORGS=10 BENCH_BATCH=100 wrk -t2 -c8 -d10s -s bench/batch.lua URL
--
-- Counts 200s, non-200s and per-message errors inside 200 answers (an
-- "error" member in a result); done() prints "WRKJSON {...}"
-- (bench/wrk_common.lua).
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") ..
    "wrk_common.lua")

setup = common.setup

function init(args)
    common.init()
    nmsg = tonumber(os.getenv("BENCH_BATCH") or "100")
    -- The body is pieces made once per thread: message i is
    -- {"id":"msg_<tag><tid>_<counter>_<i>","payload":"<hex>"}, and only the
    -- counter changes between requests, so a request fills nmsg slots of
    -- one table and concatenates it (string.format per message cost wrk
    -- more CPU per message than poold spends). Payloads are drawn once per
    -- position from the thread's 256.
    pieces = {}
    local id = string.format('{"id":"msg_%s%d_', tag, tid)
    for i = 1, nmsg do
        pieces[3 * i - 2] = id
        pieces[3 * i] = string.format('_%d","payload":"%s"}%s', i,
            common.payload(), i < nmsg and "," or "")
    end
end

function request()
    counter = counter + 1
    local c = tostring(counter)
    for i = 1, nmsg do pieces[3 * i - 1] = c end
    local body = '{"org_id":"' .. common.org() .. '","messages":[' ..
        table.concat(pieces) .. "]}"
    return wrk.format(nil, "/process/batch", nil, body)
end

function response(status, headers, body)
    common.response(status, body, true)
end

function done(summary, latency, requests)
    -- done() runs in wrk's main thread, where init() did not: no nmsg here
    local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
    common.done(summary, latency, string.format(
        '"message_errors":%d,"batch":%d,', common.total("msg_errors"), batch))
end
