#!/usr/bin/env python3
"""budget_probe.py — what PostgreSQL sees of poold's connections around a
frozen database (docs/reliability.md, "connections within the budget").

One poold (or --replicas of them sharing --budget) with a small
POOLD_DB_MAX_CONNS under load; PostgreSQL (the postmaster and every
backend), or with --stop backends only poold's pooled backends, is
SIGSTOPped for --freeze seconds, then SIGCONTed, --rounds times. A superuser psql session samples pg_stat_activity every 50 ms
(pid, backend_start, state, query) for poold's backends, before, during
(it freezes too) and after; the report lists each sample over the budget,
and for each backend seen after the freeze whether it existed before it
(an old backend poold no longer counts) or is new.

    bench/budget_probe.py --pg-dir /tmp/x-pg --pg-port 29150 --port 29101
    bench/budget_probe.py ... --stop backends --freeze 5

Needs a running cluster made by scripts/pg.sh and the build's poold.
Standard library only.
"""
import argparse
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid

SQL = ("SELECT extract(epoch from clock_timestamp())::text, pid, "
       "extract(epoch from backend_start)::text, coalesce(state, ''), "
       "application_name, coalesce(wait_event_type, '') || ':' || "
       "coalesce(wait_event, ''), left(regexp_replace(coalesce(query, ''), "
       "'\\s+', ' ', 'g'), 50) FROM pg_stat_activity WHERE application_name "
       "LIKE 'poold%' ORDER BY pid;\n"
       "SELECT 'END';\n")


class Sampler(threading.Thread):
    def __init__(self, url, period):
        super().__init__(daemon=True)
        self.period = period
        self.stop_event = threading.Event()
        self.samples = []  # (monotonic t, [row...])
        self.psql = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-F", "|", "-d", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)

    def run(self):
        while not self.stop_event.is_set():
            self.psql.stdin.write(SQL)
            self.psql.stdin.flush()
            rows = []
            while True:
                line = self.psql.stdout.readline()
                if not line or line.strip() == "END":
                    break
                rows.append(line.rstrip("\n").split("|"))
            self.samples.append((time.monotonic(), rows))
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.join(20)
        self.psql.stdin.close()
        self.psql.wait(10)


def pg_pids(pg_dir):
    with open(os.path.join(pg_dir, "postmaster.pid")) as f:
        master = int(f.readline())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                         text=True).stdout.split()
    return [master] + [int(p) for p in out]


def pooled_pids(url):
    out = subprocess.run(
        ["psql", "-X", "-At", "-d", url, "-c",
         "SELECT pid FROM pg_stat_activity WHERE application_name = 'poold'"],
        capture_output=True, text=True, check=True).stdout.split()
    return [int(p) for p in out]


def load(ports, orgs, stop, stats):
    n = 0
    while not stop.is_set():
        n += 1
        body = json.dumps({"id": "bp_" + uuid.uuid4().hex,
                           "org_id": orgs[n % len(orgs)],
                           "payload": "abcdef01"})
        try:
            c = http.client.HTTPConnection("127.0.0.1", ports[n % len(ports)],
                                           timeout=15)
            c.request("POST", "/process", body=body,
                      headers={"Content-Type": "application/json"})
            st = c.getresponse()
            st.read()
            c.close()
            stats[st.status] = stats.get(st.status, 0) + 1
        except OSError:
            stats["conn"] = stats.get("conn", 0) + 1
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-dir", required=True)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--port", type=int, required=True,
                    help="poold's (replica i listens on port + i)")
    ap.add_argument("--poold", default="build/poold")
    ap.add_argument("--max-conns", type=int, default=3,
                    help="POOLD_DB_MAX_CONNS (and POOLD_DB_MIN_IDLE)")
    ap.add_argument("--statement-ms", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--freeze", type=float, default=3.0)
    ap.add_argument("--period", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--budget", type=int, default=0,
                    help="POOLD_CLUSTER_MAX_CONNS (0: standalone)")
    ap.add_argument("--gap", type=float, default=5.0,
                    help="seconds between a SIGCONT and the next SIGSTOP")
    ap.add_argument("--stop", choices=("postgres", "backends"),
                    default="postgres",
                    help="what is SIGSTOPped: PostgreSQL (the postmaster and "
                    "every process), or only poold's pooled backends")
    ap.add_argument("--env", action="append", default=[],
                    help="extra NAME=VALUE for poold")
    a = ap.parse_args()
    url = "postgresql://poold@127.0.0.1:%d/pools" % a.pg_port
    su = "postgresql://postgres@127.0.0.1:%d/pools" % a.pg_port
    orgs = ["org_%03d" % i for i in range(1, 7)]
    env = dict(os.environ, DATABASE_URL=url, POOLD_ADMIN_TOKEN="probe",
               POOLD_CLIENT_AUTH="none",
               POOLD_DB_MAX_CONNS=str(a.max_conns),
               POOLD_DB_MIN_IDLE=str(a.max_conns),
               POOLD_STATEMENT_TIMEOUT_MS=str(a.statement_ms),
               POOLD_ACQUIRE_TIMEOUT_MS="1000", POOLD_PROCESS_COST_MS="1")
    if a.budget:
        env["POOLD_CLUSTER_MAX_CONNS"] = str(a.budget)
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    procs, ports = [], [a.port + i for i in range(a.replicas)]
    for i, port in enumerate(ports):
        log = open("/tmp/budget-probe-poold-%d.log" % i, "w")
        procs.append(subprocess.Popen(
            [a.poold], env=dict(env, POOLD_LISTEN="127.0.0.1:%d" % port),
            stdout=subprocess.DEVNULL, stderr=log))
    stop = threading.Event()
    stats = {}
    threads = [threading.Thread(target=load, args=(ports, orgs, stop, stats),
                                daemon=True) for _ in range(a.threads)]
    sampler = Sampler(su, a.period)
    freezes = []
    try:
        time.sleep(3)
        for t in threads:
            t.start()
        sampler.start()
        time.sleep(a.gap)
        for _ in range(a.rounds):
            pids = (pg_pids(a.pg_dir) if a.stop == "postgres"
                    else pooled_pids(su))
            t0 = time.monotonic()
            for p in pids:
                os.kill(p, signal.SIGSTOP)
            time.sleep(a.freeze)
            for p in pids:
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            t1 = time.monotonic()
            freezes.append((t0, t1))
            time.sleep(a.gap)
    finally:
        for p in pg_pids(a.pg_dir):
            os.kill(p, signal.SIGCONT)
        stop.set()
        sampler.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    report(a, sampler.samples, freezes, stats)


def report(a, samples, freezes, stats):
    budget = a.budget or a.max_conns
    print("answers:", stats)
    for t0, t1 in freezes:
        before = [rows for t, rows in samples if t < t0]
        old = {r[1]: r for r in (before[-1] if before else [])}
        print("freeze %.2f s; backends just before it: %s" % (
            t1 - t0, " ".join("%s(%s,%s)" % (p, r[4], r[3])
                              for p, r in old.items())))
        worst = 0
        for t, rows in samples:
            if t < t0 - 0.5 or t > t1 + a.gap:
                continue
            pooled = [r for r in rows if r[4] != "poold-housekeeping"]
            hk = len(rows) - len(pooled)
            worst = max(worst, len(pooled))
            # The promise: pooled <= budget, and with the housekeeping
            # connections <= budget + one per replica.
            mark = ("OVER" if len(pooled) > budget or
                    len(rows) > budget + a.replicas else "    ")
            desc = " ".join(
                "%s%s[%s %s %s]" % ("old:" if r[1] in old else "new:",
                                    r[1], r[3], r[5], r[6][:24])
                for r in rows)
            print("%s t=%+6.2f pooled=%d hk=%d  %s" % (
                mark, t - t1, len(pooled), hk, desc))
        print("most pooled backends at once: %d (budget %d)" % (worst, budget))
        # After the SIGCONT: the last sample still showing a pooled backend
        # from before the freeze, and the first showing a new one.
        after = [(t, rows) for t, rows in samples if t1 <= t <= t1 + a.gap]
        last_old = max((t for t, rows in after
                        if any(r[1] in old and r[4] == "poold"
                               for r in rows)), default=None)
        first_new = min((t for t, rows in after
                         if any(r[1] not in old and r[4] == "poold"
                                for r in rows)), default=None)
        print("after SIGCONT: last old pooled backend seen at %s, first new "
              "one at %s%s" % (
                  "-" if last_old is None else "%+.2f s" % (last_old - t1),
                  "-" if first_new is None else "%+.2f s" % (first_new - t1),
                  " (both in the same samples)" if last_old and first_new
                  and last_old >= first_new else ""))


if __name__ == "__main__":
    main()
