#!/usr/bin/env python3
"""soak.py — the fault soak's driver; bench/soak.sh builds poold, starts the
soak's PostgreSQL and runs this (see docs/reliability.md).

Three poold replicas sharing POOLD_CLUSTER_MAX_CONNS behind HAProxy
(docker/haproxy/haproxy.cfg), steady load from several orgs with keys, and
faults thrown at random all the while; the invariants are checked as it
goes and at the end. Python 3 standard library only.
"""
import argparse
import array
import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time

# The replicas' settings: small, so that the budget and the time bound are
# met often. The bound is the contract's: acquire + statement + 1 s.
BUDGET = 12
LOCAL_MAX = 8
ACQUIRE_MS = 1000
STATEMENT_MS = 2000
BOUND_S = (ACQUIRE_MS + STATEMENT_MS) / 1000.0 + 1.0
READ_TIMEOUT_S = 3
CLIENT_TIMEOUT_S = 30
TOKEN = "soak-admin-token"
ORG_COUNT = 6
REVOKE_S = 2.0         # a revoked key is refused everywhere within this
SLOW_SLACK_S = 3.0     # "plus a few seconds" for a stalled client
# After a database fault ends, 503 database_unavailable stays allowed for
# the breaker's longest backoff (5 s) plus the time bound.
DB_GRACE_S = 5.0 + BOUND_S
LOAD_OK_503 = {"pool_exhausted", "database_unavailable", "org_paused",
               "shutting_down"}

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def log(msg):
    sys.stderr.write("[soak %7.1fs] %s\n" % (now(), msg))
    sys.stderr.flush()


class Shared:
    """Counters, violations and the ledger, behind one lock."""

    def __init__(self, out):
        self.lock = threading.Lock()
        self.out = out
        self.statuses = {}      # "200", "503 pool_exhausted", ...
        self.violations = {}    # kind -> count
        self.examples = {}      # kind -> first few details
        self.faults = {}        # kind -> count
        self.ledger = open(os.path.join(out, "ledger.tsv"), "w")
        self.vfile = open(os.path.join(out, "violations.jsonl"), "w")
        self.ffile = open(os.path.join(out, "faults.dat"), "w")
        self.lat = {}           # second -> array of latencies (ms)
        self.lat_max = 0.0
        self.exempt = 0
        self.db_windows = []    # [start, end or None]
        self.kills = []         # times of replica SIGKILLs
        self.revocations = []   # lag (s) until every replica refused
        self.notes = {}         # kind -> count, not violations
        self.stop = threading.Event()      # everything stops
        self.calm = threading.Event()      # faults stop (cool-down)

    def status(self, key, n=1):
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + n

    def violation(self, kind, detail):
        with self.lock:
            n = self.violations.get(kind, 0) + 1
            self.violations[kind] = n
            ex = self.examples.setdefault(kind, [])
            if len(ex) < 5:
                ex.append(detail)
            self.vfile.write(json.dumps({"t": round(now(), 3), "kind": kind,
                                         "detail": detail}) + "\n")
            self.vfile.flush()
        if n <= 5:
            log("VIOLATION %s: %s" % (kind, detail))

    def fault(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1
            self.ffile.write("%.3f %s\n" % (now(), kind))
            self.ffile.flush()

    def record(self, org, mid, status, code):
        with self.lock:
            self.ledger.write("%s\t%s\t%s\t%s\n" % (org, mid, status, code))

    def latency(self, t_start, t_sent, t_end, what, via_proxy):
        """Checks one answer against the bound (measured from full send)."""
        ms = (t_end - t_sent) * 1000.0
        with self.lock:
            self.lat.setdefault(int(t_end), array.array("f")).append(ms)
            self.lat_max = max(self.lat_max, ms)
            killed = via_proxy and self.killed_between(t_start, t_end)
        if t_end - t_sent > BOUND_S:
            if killed:
                # HAProxy retried it on another replica after the first
                # one died under it: two answers' time, not one.
                with self.lock:
                    self.exempt += 1
            else:
                self.violation("latency_over_bound",
                               "%s answered after %.0f ms (bound %.0f ms)"
                               % (what, ms, BOUND_S * 1000))

    def killed_between(self, t0, t1):
        """Was a replica SIGKILLed within [t0, t1]? (the lock held)"""
        for k in reversed(self.kills):  # in time order: newest first
            if k < t0:
                return False
            if k <= t1:
                return True
        return False

    def db_fault_begin(self):
        with self.lock:
            self.db_windows.append([now(), None])
            return len(self.db_windows) - 1

    def db_fault_end(self, idx):
        with self.lock:
            self.db_windows[idx][1] = now()

    def db_age(self, t_event, t):
        """Seconds of database time between t_event and t: from the end
        of the last database fault that overlapped them (a replica cannot
        learn of a change while the database is frozen or down); None
        while one is still going on at t."""
        since = t_event
        with self.lock:
            for s, e in self.db_windows:
                if s <= t and (e is None or e >= t_event):
                    if e is None or e > t:
                        return None
                    since = max(since, e)
        return t - since

    def note(self, kind):
        """Something worth counting that is not a violation."""
        with self.lock:
            self.notes[kind] = self.notes.get(kind, 0) + 1

    def db_troubled(self, t0, t1):
        """Did [t0, t1] meet a database fault (or its grace after)?"""
        with self.lock:
            return any(s <= t1 and (e is None or t0 <= e + DB_GRACE_S)
                       for s, e in self.db_windows)


# --- HTTP -------------------------------------------------------------------

def parse_code(status, data):
    if status < 300:
        return ""
    try:
        return json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "?"


def call(port, method, path, body=None, token=TOKEN, timeout=None):
    """One request on a new connection: (status, code, json, t_start,
    t_sent, t_end); status is "conn" when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port,
                                      timeout=timeout or BOUND_S + 10)
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    t_start = t_sent = now()
    try:
        conn.request(method, path, body=data, headers=headers)
        t_sent = now()
        resp = conn.getresponse()
        raw = resp.read()
        t_end = now()
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = None
        return resp.status, parse_code(resp.status, raw), obj, \
            t_start, t_sent, t_end
    except (OSError, http.client.HTTPException) as e:
        kind = "timeout" if isinstance(e, socket.timeout) else "conn"
        return kind, str(e), None, t_start, t_sent, now()
    finally:
        conn.close()


# --- processes --------------------------------------------------------------

class Replica:
    def __init__(self, i, port, args):
        self.i, self.port, self.args = i, port, args
        self.proc = None
        self.intervals = []  # [start, end or None]
        self.restarts = 0
        self.logf = open(os.path.join(args.out, "poold-%d.log" % i), "ab")

    def start(self):
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.args.db_url,
            "POOLD_LISTEN": "127.0.0.1:%d" % self.port,
            "POOLD_ADMIN_TOKEN": TOKEN,
            "POOLD_CLIENT_AUTH": "keys",
            "POOLD_CLUSTER_MAX_CONNS": str(BUDGET),
            "POOLD_DB_MAX_CONNS": str(LOCAL_MAX),
            "POOLD_DB_MIN_IDLE": "4",
            "POOLD_POOL_SIZE": "4",
            "POOLD_ACQUIRE_TIMEOUT_MS": str(ACQUIRE_MS),
            "POOLD_STATEMENT_TIMEOUT_MS": str(STATEMENT_MS),
            "POOLD_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "POOLD_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S),
            "POOLD_PROCESS_COST_MS": "1",
            "POOLD_LOG_FORMAT": "text"})
        if self.i == 1 and self.args.malloc_count:
            # heap bytes in use tell a leak from the allocator's arenas
            # growing, which RSS alone cannot
            env["LD_PRELOAD"] = self.args.malloc_count
            env["MALLOC_COUNT_FILE"] = self.mc_file()
        self.proc = subprocess.Popen([self.args.poold], env=env,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.intervals.append([now(), None])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def mc_file(self):
        return os.path.join(self.args.out, "mc-%d.json" % self.i)

    def heap_kb(self):
        """Heap bytes in use (KiB), from the malloc_count shim, or None."""
        if self.i != 1 or not self.args.malloc_count or not self.alive():
            return None
        trigger = self.mc_file() + ".trigger"
        open(trigger, "w").close()
        deadline = time.monotonic() + 1.0
        while os.path.exists(trigger) and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            with open(self.mc_file()) as f:
                return json.load(f)["bytes_in_use"] // 1024
        except (OSError, ValueError, KeyError):
            return None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.intervals[-1][1] = now()

    def stop(self):
        if not self.alive():
            return
        end_process(self.proc, 20)
        self.intervals[-1][1] = now()

    def present(self, t0, t1):
        """Alive at some moment of [t0 - 1 s, t1]: its connections may
        still be in pg_stat_activity."""
        return any(s <= t1 and (e is None or e >= t0 - 1.0)
                   for s, e in self.intervals)

    def ready(self):
        st = call(self.port, "GET", "/readyz", timeout=2)[0]
        return st == 200

    def rss_kb(self, field="VmRSS:"):
        """Resident memory (KiB): VmRSS, or RssAnon (no file pages)."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1])
        except (OSError, AttributeError):
            pass
        return None


def end_process(proc, timeout, sig=signal.SIGTERM):
    """Sends sig (None: nothing), waits up to timeout, then SIGKILL."""
    if proc.poll() is not None:
        return
    if sig is not None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_quietly(pred, timeout):
    """True once pred() is, False after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


class Haproxy:
    def __init__(self, args, replicas):
        self.port = args.port
        env = dict(os.environ)
        env.update({"POOLD_HAPROXY_BIND": "127.0.0.1:%d" % self.port,
                    "POOLD_HAPROXY_DIR": args.haproxy_dir})
        for r in replicas:
            env["POOLD_%d" % r.i] = "127.0.0.1:%d" % r.port
        cfg = os.path.join(args.haproxy_dir, "haproxy.cfg")
        self.logf = open(os.path.join(args.out, "haproxy.log"), "wb")
        subprocess.run(["haproxy", "-c", "-q", "-f", cfg], env=env,
                       check=True, stdout=self.logf, stderr=self.logf)
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], env=env,
                                     stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)

    def stop(self):
        end_process(self.proc, 10)


class Psql:
    """One psql session on a pipe, as the superuser."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-F", " ", "-v", "ON_ERROR_STOP=1",
             "-d", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def ask(self, sql, timeout):
        """Sends sql; returns the first line of its answer, or None."""
        try:
            self.proc.stdin.write(sql + "\n")
            self.proc.stdin.flush()
            r, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not r:
                return None
            line = self.proc.stdout.readline()
            return line.strip() if line else None
        except (OSError, ValueError):
            return None

    def send(self, sql):
        try:
            self.proc.stdin.write(sql + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def close(self, force=False):
        if force:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        end_process(self.proc, 5, None)  # psql ends at the end of its input


# --- the soak ---------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.sh = Shared(args.out)
        self.rnd = random.Random(args.seed)
        self.run_id = "s%x" % (int(time.time()) & 0xffffff)
        self.orgs = ["%s_o%d" % (self.run_id, i) for i in range(ORG_COUNT)]
        self.keys = {}  # org -> (key, key_id): the key clients use now
        self.keys_lock = threading.Lock()
        self.replicas = [Replica(i + 1, args.port + i + 1, args)
                         for i in range(3)]
        self.replica_lock = threading.Lock()  # kill/restart vs. probes
        self.proxy = None
        self.threads = []
        self.stopped_pg = []  # pids SIGSTOPped right now
        self.children = []    # short-lived psql sessions
        self.rss_base = {}    # replica index -> (pid, rss) at end of warm-up
        self.rss_last = {}
        self.heap_base = self.heap_last = None  # poold-1, KiB
        self.conn_max = 0
        self.conn_samples = 0
        self.conn_over = 0

    # -- helpers
    def alive_replicas(self):
        return [r for r in self.replicas if r.alive()]

    def any_replica(self):
        alive = self.alive_replicas()
        return self.rnd.choice(alive) if alive else self.replicas[0]

    def key_of(self, org):
        with self.keys_lock:
            return self.keys[org]

    def sleep(self, s, ev=None):
        """Sleeps s seconds or until the soak (or ev) stops."""
        return (ev or self.sh.stop).wait(s)

    def spawn(self, fn, name):
        t = threading.Thread(target=self.guard, args=(fn,), name=name,
                             daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def guard(self, fn):
        try:
            fn()
        except Exception as e:  # a bug of the soak itself: stop loudly
            log("soak thread %s failed: %r" % (threading.current_thread()
                                               .name, e))
            self.sh.violation("soak_error", repr(e))
            self.sh.stop.set()

    def admin(self, method, path, body=None, replica=None, what=None,
              gone_ok=False):
        """An admin call to one replica, checked against the bound
        (gone_ok: a 404 is an answer too)."""
        r = replica or self.any_replica()
        st, code, obj, t0, t1, t2 = call(r.port, method, path, body)
        if isinstance(st, int):
            self.sh.latency(t0, t1, t2, what or "%s %s" % (method, path),
                            False)
            self.sh.status("admin %d%s" % (st, " " + code if code else ""))
            if st >= 300 and not (st == 503 and code in LOAD_OK_503) and \
                    not (gone_ok and st == 404):
                self.sh.violation("unexpected_status", "%s %s on poold-%d: "
                                  "%d %s" % (method, path, r.i, st, code))
        elif st == "timeout":
            self.sh.violation("latency_over_bound", "%s %s on poold-%d: no "
                              "answer in %.0f s" % (method, path, r.i,
                                                    t2 - t1))
        return st, obj

    # -- setup
    def setup(self):
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            wait_for(r.ready, 30, "poold-%d to be ready" % r.i)
        self.proxy = Haproxy(self.args, self.replicas)
        wait_for(lambda: call(self.args.port, "GET", "/readyz",
                              timeout=2)[0] == 200, 15, "HAProxy")
        rules = {"rules": [{"type": "max_payload_bytes", "value": 1024}]}
        for org in self.orgs:
            st, _ = self.admin_retry("PUT", "/orgs/" + org,
                                     {"config": rules})
            if st not in (200, 201):
                raise RuntimeError("PUT /orgs/%s: %s" % (org, st))
            st, obj = self.admin_retry("POST", "/orgs/%s/keys" % org,
                                       {"label": "soak"})
            if st != 201:
                raise RuntimeError("POST /orgs/%s/keys: %s" % (org, st))
            self.keys[org] = (obj["key"], obj["key_id"], now())
        time.sleep(REVOKE_S + 0.5)  # every replica knows the keys
        self.burst()

    def burst(self):
        """Many clients at once on every replica, each request on a new
        connection: poold serves a connection per thread, and glibc gives
        new threads new malloc arenas (up to 8 per core) that stay. Done
        here, their growth is part of the warm-up, not of what RSS is
        judged on afterwards."""
        def client(r, n):
            for j in range(8):
                org = self.orgs[(n + j) % len(self.orgs)]
                mid = "%s-burst%d-%d-%d" % (self.run_id, r.i, n, j)
                st, code, _, t0, t1, t2 = call(
                    r.port, "POST", "/process",
                    {"id": mid, "org_id": org, "payload": "00"},
                    token=self.key_of(org)[0])
                self.process_answer("POST /process (warm-up burst)", org,
                                    [mid], st, code, t0, t1, t2, False)
        clients = [threading.Thread(target=client, args=(r, n), daemon=True)
                   for r in self.replicas for n in range(24)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)

    def admin_retry(self, method, path, body=None, until=30, replica=None,
                    maybe_done=False):
        """Until an answer below 500. A DELETE whose earlier try may have
        committed (a 503 that says the change may or may not be stored,
        its COMMIT's answer lost to a terminated backend; no answer at
        all) may find the thing gone: a 404 is then its answer."""
        deadline = now() + until
        while True:
            st, obj = self.admin(method, path, body, replica,
                                 gone_ok=maybe_done and method == "DELETE")
            if (isinstance(st, int) and st < 500) or now() > deadline \
                    or self.sh.stop.is_set():
                return st, obj
            maybe_done = True
            self.sleep(0.5)

    # -- load: single messages through HAProxy
    def loader(self, n, rate):
        conn = None
        seq = 0
        period = 1.0 / rate
        next_t = now()
        while not self.sh.stop.is_set():
            next_t += period
            delay = next_t - now()
            if delay > 0:
                if self.sleep(delay):
                    break
            elif delay < -1.0:
                next_t = now()  # fell behind: no burst to catch up
            org = self.rnd.choice(self.orgs)
            seq += 1
            mid = "%s-w%d-%d" % (self.run_id, n, seq)
            body = json.dumps({"id": mid, "org_id": org,
                               "payload": "%08x" % seq}).encode()
            key, _, created = self.key_of(org)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.args.port,
                                                  timeout=BOUND_S + 10)
            t0 = t1 = now()
            try:
                conn.request("POST", "/process", body=body, headers={
                    "Authorization": "Bearer " + key,
                    "Content-Type": "application/json"})
                t1 = now()
                resp = conn.getresponse()
                raw = resp.read()
                t2 = now()
                st, code = resp.status, parse_code(resp.status, raw)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = None
                t2 = now()
                st, code = ("timeout" if isinstance(e, socket.timeout)
                            else "conn"), ""
            self.process_answer("POST /process", org, [mid], st, code,
                                t0, t1, t2, True, key_created=created)

    def process_answer(self, what, org, mids, st, code, t0, t1, t2,
                       via_proxy, entries=None, key_created=None):
        """Books one answer of POST /process or /process/batch."""
        key = str(st) + (" " + code if code else "")
        self.sh.status(key, len(mids))
        if isinstance(st, int):
            self.sh.latency(t0, t1, t2, what, via_proxy)
        elif st == "timeout":
            with self.sh.lock:
                killed = self.sh.killed_between(t0, t2)
            if not killed:
                self.sh.violation("latency_over_bound",
                                  "%s: no answer in %.0f s" % (what, t2 - t1))
        if entries is not None:
            for m, e in zip(mids, entries):
                if "error" in e:
                    c = e["error"].get("code", "?")
                    self.sh.record(org, m, "entry_error", c)
                    self.sh.violation("unexpected_status",
                                      "%s entry %s: %s" % (what, m, c))
                else:
                    self.sh.record(org, m, 200, "")
            return
        for m in mids:
            self.sh.record(org, m, st, code)
        if not isinstance(st, int) or st in (200, 504):
            return
        if st == 503 and code in LOAD_OK_503:
            if code == "database_unavailable" and not self.sh.db_troubled(t0, t2):
                self.sh.violation("db_unavailable_while_up",
                                  "%s %s answered 503 database_unavailable "
                                  "with the database up" % (what, mids[0]))
            return
        if st in (401, 403):
            # the client's key was created 2.5 s ago or more: "within 2 s
            # on every other" poold, given 2 s of database time to learn it
            age = None if key_created is None else \
                self.sh.db_age(key_created, t0)
            if key_created is not None and (age is None or age < REVOKE_S):
                self.sh.note("new key refused across a database fault")
                return
            self.sh.violation("live_key_refused", "%s %s: %s %s"
                              % (what, mids[0], st, code))
            return
        self.sh.violation("unexpected_status", "%s %s: %s %s"
                          % (what, mids[0], st, code))

    def batcher(self):
        seq = 0
        while not self.sleep(self.rnd.uniform(0.5, 1.5)):
            org = self.rnd.choice(self.orgs)
            # Half the batches go by the INSERT of a group, half (over 64
            # messages) by COPY (src/service_commit.c).
            n = self.rnd.choice((self.rnd.randint(5, 40),
                                 self.rnd.randint(65, 120)))
            mids = []
            for _ in range(n):
                seq += 1
                mids.append("%s-b-%d" % (self.run_id, seq))
            body = {"org_id": org, "messages": [
                {"id": m, "payload": "b%d" % i} for i, m in enumerate(mids)]}
            key, _, created = self.key_of(org)
            st, code, obj, t0, t1, t2 = call(self.args.port, "POST",
                                             "/process/batch", body,
                                             token=key)
            self.sh.fault("batch")
            entries = None
            if st == 200:
                entries = obj.get("results", []) if obj else []
                if len(entries) != n:
                    self.sh.violation("unexpected_status",
                                      "batch of %d answered %d results"
                                      % (n, len(entries)))
                    entries = None
            self.process_answer("POST /process/batch", org, mids, st, code,
                                t0, t1, t2, True, entries, created)

    # -- faults on the database and the replicas
    def pg_pids(self):
        try:
            with open(os.path.join(self.args.pg_dir, "postmaster.pid")) as f:
                pm = int(f.readline())
        except (OSError, ValueError):
            return []
        pids = [pm]
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pm:
                pids.append(int(d))
        return pids

    def faulter(self):
        kinds = ["pg_restart", "pg_terminate", "pg_terminate", "pg_sigstop",
                 "replica_kill", "replica_kill"]
        self.sleep(5)
        while not self.sh.calm.is_set() and not self.sh.stop.is_set():
            kind = self.rnd.choice(kinds)
            self.sh.fault(kind)
            w = self.sh.db_fault_begin() if kind.startswith("pg_") else None
            if kind == "pg_restart":
                log("fault: PostgreSQL restart")
                subprocess.run([self.args.pg_sh, "restart", self.args.pg_dir,
                                str(self.args.pg_port)],
                               stdout=subprocess.DEVNULL, check=False,
                               start_new_session=True)
            elif kind == "pg_terminate":
                q = Psql(self.args.super_url)
                n = q.ask("SELECT count(pg_terminate_backend(pid)) FROM "
                          "pg_stat_activity WHERE application_name LIKE "
                          "'poold%%' AND random() < %.2f;"
                          % self.rnd.uniform(0.3, 1.0), 10)
                q.close()
                log("fault: terminated %s poold backends" % n)
            elif kind == "pg_sigstop":
                pids = self.pg_pids()
                log("fault: SIGSTOP PostgreSQL (%d processes) for 3 s"
                    % len(pids))
                self.stopped_pg = pids
                try:
                    for p in pids:
                        os.kill(p, signal.SIGSTOP)
                    self.sleep(3.0)
                finally:
                    self.cont_pg()
            else:
                with self.replica_lock:
                    victim = self.rnd.choice(self.replicas[1:])
                    log("fault: SIGKILL poold-%d" % victim.i)
                    with self.sh.lock:
                        self.sh.kills.append(now())
                    victim.kill()
                self.sleep(self.rnd.uniform(1.0, 3.0))
                with self.replica_lock:
                    if self.sh.stop.is_set():
                        break  # cleanup has begun: start nothing new
                    victim.restarts += 1
                    victim.start()
                log("fault: poold-%d restarted" % victim.i)
            if w is not None:
                self.sh.db_fault_end(w)
            if self.sleep(self.rnd.uniform(3.0, 8.0), self.sh.calm):
                break

    def cont_pg(self):
        for p in reversed(self.stopped_pg):
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        self.stopped_pg = []

    # -- tenants and operators
    def rotator(self):
        while not self.sleep(self.rnd.uniform(3.0, 6.0), self.sh.calm):
            org = self.rnd.choice(self.orgs)
            old = self.key_of(org)
            st, obj = self.admin_retry("POST", "/orgs/%s/keys" % org,
                                       {"label": "rotated"})
            if st != 201:
                continue
            created = now()
            self.sh.fault("key_rotation")
            self.sleep(REVOKE_S + 0.5)  # the new key works everywhere
            with self.keys_lock:
                self.keys[org] = (obj["key"], obj["key_id"], created)
            # requests with the old key in flight are answered by now
            self.sleep(BOUND_S + 1.0)
            path = "/orgs/%s/keys/%s" % (org, old[1])
            st, _ = self.admin_retry("DELETE", path)
            if st not in (204, 404):  # 404: an earlier try had revoked it
                continue
            self.sh.fault("key_revocation")
            self.probe_revoked(org, old[0], now())

    def probe_revoked(self, org, key, t_revoked):
        """Asks every replica directly, every 100 ms, until each refuses
        the key: an accepted probe sent 2 s after the revocation's answer
        is a violation. The probe's body is invalid: a live key gets 400,
        a revoked one 401 (the key is checked first), nothing is written."""
        body = {"id": "", "org_id": org, "payload": ""}
        pending = {r.i for r in self.replicas}
        flagged = set()
        lag = 0.0
        while pending and now() < t_revoked + 15 and not self.sh.stop.is_set():
            for r in self.replicas:
                if r.i not in pending:
                    continue
                if not r.alive():
                    pending.discard(r.i)  # a new one reads the keys afresh
                    continue
                st, code, _, _, t1, t2 = call(r.port, "POST", "/process",
                                              body, token=key)
                if st == 401:
                    pending.discard(r.i)
                    lag = max(lag, t2 - t_revoked)
                elif st == 400 and t1 >= t_revoked + REVOKE_S \
                        and r.i not in flagged:
                    age = self.sh.db_age(t_revoked, t1)
                    if age is None or age < REVOKE_S:
                        # the database was frozen or down for part of
                        # those 2 s: the replica could not know yet
                        self.sh.note("revoked key accepted across a "
                                     "database fault")
                        continue
                    flagged.add(r.i)
                    self.sh.violation(
                        "revoked_key_accepted",
                        "poold-%d accepted a key of %s %.2f s after its "
                        "revocation was answered" % (r.i, org,
                                                     t1 - t_revoked))
            self.sleep(0.1)
        if pending and not self.sh.stop.is_set():
            lag = max(lag, now() - t_revoked)
        with self.sh.lock:
            self.sh.revocations.append(lag)

    def pauser(self):
        while not self.sleep(self.rnd.uniform(5.0, 10.0), self.sh.calm):
            org = self.rnd.choice(self.orgs)
            st, _ = self.admin_retry("POST", "/pools/%s/pause" % org)
            self.sh.fault("pause")
            self.sleep(self.rnd.uniform(1.0, 3.0))
            self.sh.fault("resume")
            self.admin_retry("POST", "/pools/%s/resume" % org, until=60)

    def churner(self):
        """An org made on one replica, sent messages there by three
        clients until it is deleted (answers: 200 with its row, or a
        refusal without one), then its pool must leave that replica's
        /stats: a deleted org's pool is freed once nothing uses it."""
        seq = 0
        rules = {"rules": [{"type": "max_payload_bytes", "value": 1024}]}
        while not self.sleep(self.rnd.uniform(3.0, 6.0), self.sh.calm):
            seq += 1
            org = "%s_c%d" % (self.run_id, seq)
            r = self.any_replica()
            st, _ = self.admin_retry("PUT", "/orgs/" + org, {"config": rules},
                                     replica=r)
            if st not in (200, 201):
                continue  # the replica died: nothing was made there
            self.sh.fault("org_churn")
            st, obj = self.admin("POST", "/orgs/%s/keys" % org, {}, r)
            key = obj["key"] if st == 201 and obj else None
            t_begin = now()
            senders = [threading.Thread(target=self.churn_send,
                                        args=(r, org, key, n), daemon=True)
                       for n in range(3)]
            for t in senders:
                t.start()
            self.sleep(self.rnd.uniform(0.0, 0.3))
            st, _ = self.admin_retry("DELETE", "/orgs/" + org, until=60,
                                     replica=r)
            if st != 204:  # r died: any replica deletes it (if not done)
                self.admin_retry("DELETE", "/orgs/" + org, until=60,
                                 maybe_done=True)
            for t in senders:
                t.join(BOUND_S * 10 + 10)

            def freed():
                st, _, obj, _, _, _ = call(r.port, "GET", "/stats")
                return st == 200 and org not in (obj or {}).get("pools", {})
            if not wait_for_quietly(freed, 20):
                with self.sh.lock:
                    killed = self.sh.killed_between(t_begin, now())
                if killed or self.sh.db_troubled(t_begin, now()):
                    self.sh.note("deleted org's pool kept across a fault")
                else:
                    self.sh.violation("pool_not_freed", "%s on poold-%d: "
                                      "still in /stats 20 s after its "
                                      "delete" % (org, r.i))

    def churn_send(self, r, org, key, n):
        """Messages to a churned org on its replica, one at a time, until
        its delete refuses one (at most 300): the delete meets requests."""
        for i in range(300):
            mid = "%s-c%d-%d" % (org, n, i)
            st, code, _, t0, t1, t2 = call(
                r.port, "POST", "/process",
                {"id": mid, "org_id": org, "payload": "%04x" % i},
                token=key or "none")
            self.sh.status(str(st) + (" " + code if code else ""))
            self.sh.record(org, mid, st, code)
            if not isinstance(st, int):
                continue  # the replica died under it: the ledger decides
            self.sh.latency(t0, t1, t2, "POST /process (churned org)", False)
            # Deleted: unknown (404), or its keys revoked first (401).
            if st in (401, 404):
                return
            if st in (200, 504) or (st == 503 and code in LOAD_OK_503):
                continue
            self.sh.violation("unexpected_status", "churned %s %s: %s %s"
                              % (org, mid, st, code))

    def resizer(self):
        while not self.sleep(self.rnd.uniform(2.0, 4.0), self.sh.calm):
            org = self.rnd.choice(self.orgs)
            self.sh.fault("resize")
            self.admin("PUT", "/pools/%s/size" % org,
                       {"max_size": self.rnd.randint(1, 6)})

    def locker(self):
        """A psql session holds an orgs row FOR UPDATE for 4-9 s while one
        replica gets three to five admin writes for that org."""
        while not self.sleep(self.rnd.uniform(8.0, 15.0), self.sh.calm):
            org = self.rnd.choice(self.orgs)
            q = Psql(self.args.super_url)
            self.children.append(q)
            got = q.ask("BEGIN; SELECT org_id FROM orgs WHERE org_id = '%s' "
                        "FOR UPDATE;" % org, 10)
            if got != org:
                q.close()
                self.children.remove(q)
                continue
            self.sh.fault("locked_row_admin")
            r = self.any_replica()
            writers = [threading.Thread(
                target=self.admin, daemon=True,
                args=("PUT", "/pools/%s/size" % org,
                      {"max_size": self.rnd.randint(2, 6)}, r,
                      "PUT /pools/{org}/size behind a locked row"))
                for _ in range(self.rnd.randint(3, 5))]
            for w in writers:
                w.start()
            self.sleep(self.rnd.uniform(4.0, 9.0))
            q.send("COMMIT;")
            q.close()
            self.children.remove(q)
            for w in writers:
                w.join(BOUND_S + 15)

    # -- slow and trickling clients, straight to one replica (HAProxy would
    # buffer the request)
    def slowpoke(self):
        modes = ["trickle", "stall_headers", "keepalive_stall", "slow_reader"]
        seq = 0
        busy = []
        while not self.sleep(self.rnd.uniform(2.0, 5.0), self.sh.calm):
            busy = [t for t in busy if t.is_alive()]
            if len(busy) >= 4:
                continue
            seq += 1
            mode = self.rnd.choice(modes)
            self.sh.fault("client_" + mode)
            t = threading.Thread(target=self.guard, daemon=True, args=(
                lambda m=mode, s=seq: self.slow_client(m, s),))
            busy.append(t)
            t.start()

    def raw_request(self, org, mid):
        body = json.dumps({"id": mid, "org_id": org, "payload": "5105"})
        return ("POST /process HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: Bearer %s\r\nContent-Type: application/json"
                "\r\nContent-Length: %d\r\n\r\n%s"
                % (self.key_of(org)[0], len(body), body)).encode()

    def slow_client(self, mode, seq):
        r = self.any_replica()
        gen = len(r.intervals)
        org = self.rnd.choice(self.orgs)
        mid = "%s-c%d" % (self.run_id, seq)
        partial = b"POST /process HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        try:
            s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        except OSError:
            return
        s.settimeout(CLIENT_TIMEOUT_S + 15)
        try:
            if mode != "stall_headers":
                created = self.key_of(org)[2]
                req = self.raw_request(org, mid)
                t0 = now()
                if mode == "trickle":
                    # the whole request over about half the read timeout
                    step = READ_TIMEOUT_S / 2.0 / len(req) * 8
                    for i in range(0, len(req), 8):
                        s.sendall(req[i:i + 8])
                        time.sleep(step)
                else:
                    s.sendall(req)
                t1 = now()
                if mode == "slow_reader":
                    time.sleep(2.0)
                resp = http.client.HTTPResponse(s)
                resp.begin()
                raw = resp.read()
                # a slow reader reads late on purpose: no latency to judge
                t2 = t1 if mode == "slow_reader" else now()
                self.process_answer("POST /process (%s client)" % mode,
                                    org, [mid], resp.status,
                                    parse_code(resp.status, raw), t0, t1, t2,
                                    False, key_created=created)
                if mode != "keepalive_stall":
                    return
            # the first header lines of a request, then silence
            s.sendall(partial)
            t_began = now()
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                pass
            except OSError:
                pass  # a reset closes it too
            held = now() - t_began
        except (OSError, http.client.HTTPException):
            return  # cut off before the stall (its replica killed, say)
        finally:
            s.close()
        if len(r.intervals) != gen or not r.alive():
            return  # the replica was killed under it: nothing to judge
        if held > READ_TIMEOUT_S + SLOW_SLACK_S:
            self.sh.violation("stalled_client_kept",
                              "poold-%d kept a %s client %.1f s (read "
                              "timeout %d s)" % (r.i, mode, held,
                                                 READ_TIMEOUT_S))

    # -- samplers
    def conn_sampler(self):
        q = None
        over_run = False
        out = open(os.path.join(self.args.out, "conns.dat"), "w")
        sql = ("SELECT count(*) FILTER (WHERE application_name LIKE "
               "'poold%'), count(*) FILTER (WHERE application_name = "
               "'poold-housekeeping') FROM pg_stat_activity;")
        while not self.sh.stop.is_set():
            if q is None:
                q = Psql(self.args.super_url)
            t0 = now()
            line = q.ask(sql, 4)
            t1 = now()
            parts = (line or "").split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                q.close(force=True)
                q = None
                self.sleep(0.5)
                continue
            total, hk = int(parts[0]), int(parts[1])
            present = sum(1 for r in self.replicas if r.present(t0, t1))
            limit = BUDGET + present
            out.write("%.2f %d %d %d\n" % (t1, total, hk, limit))
            self.conn_samples += 1
            self.conn_max = max(self.conn_max, total)
            if total > limit:
                self.conn_over += 1
                if not over_run:
                    self.sh.violation(
                        "connections_over_budget",
                        "%d poold connections (%d housekeeping) with %d "
                        "replicas present: limit %d" % (total, hk, present,
                                                        limit))
                over_run = True
            else:
                over_run = False
            self.sleep(self.args.sample_ms / 1000.0)
        if q is not None:
            q.close()
        out.close()

    def rss_sampler(self):
        out = open(os.path.join(self.args.out, "rss.dat"), "w")
        while True:
            row = []
            for r in self.replicas:
                kb = r.rss_kb() if r.alive() else None
                row.append("NaN" if kb is None else str(kb))
                if kb is not None:
                    pid = r.proc.pid
                    if now() >= self.args.warmup and r.i not in self.rss_base \
                            and r.restarts == 0:
                        self.rss_base[r.i] = (pid, kb)
                    self.rss_last[r.i] = (pid, kb)
            heap = self.replicas[0].heap_kb()
            anon = self.replicas[0].rss_kb("RssAnon:")
            if heap is not None and anon is not None:
                if now() >= self.args.warmup and self.heap_base is None:
                    self.heap_base = (heap, anon)
                self.heap_last = (heap, anon)
            row.append("NaN" if heap is None else str(heap))
            out.write("%.1f %s\n" % (now(), " ".join(row)))
            out.flush()
            if self.sleep(self.args.rss_every):
                break
        out.close()

    # -- the run
    def run(self):
        a = self.args
        log("run %s: %d s (warm-up %d s, cool-down %d s), %d req/s, "
            "3 replicas, budget %d, bound %.0f ms"
            % (self.run_id, a.seconds, a.warmup, a.cooldown, a.rate, BUDGET,
               BOUND_S * 1000))
        self.setup()
        global T0
        T0 = time.monotonic()  # the run's clock starts with the load
        with self.sh.lock:
            self.sh.lat.clear()
        for r in self.replicas:  # the replicas' lives on the new clock
            r.intervals = [[0.0, None]]
        log("replicas, HAProxy on :%d and %d orgs with keys are up"
            % (a.port, ORG_COUNT))
        self.spawn(self.conn_sampler, "conns")
        self.spawn(self.rss_sampler, "rss")
        workers = 6
        for n in range(workers):
            self.spawn(lambda n=n: self.loader(n, a.rate / workers),
                       "load%d" % n)
        self.spawn(self.batcher, "batch")
        for fn in (self.faulter, self.rotator, self.pauser, self.resizer,
                   self.locker, self.slowpoke, self.churner):
            self.spawn(fn, fn.__name__)
        last = 0
        while now() < a.seconds and not self.sh.stop.is_set():
            if now() >= a.seconds - a.cooldown and not self.sh.calm.is_set():
                log("cool-down: no new faults")
                self.sh.calm.set()
            if now() - last >= a.progress:
                last = now()
                with self.sh.lock:
                    st = dict(self.sh.statuses)
                    nv = sum(self.sh.violations.values())
                log("progress: %d answers, %d violations so far"
                    % (sum(st.values()), nv))
            self.sleep(1.0)
        self.sh.calm.set()
        # every replica is running again before the last RSS sample
        for r in self.replicas:
            if not r.alive():
                with self.replica_lock:
                    r.restarts += 1
                    r.start()
        self.sh.stop.set()
        deadline = time.monotonic() + BOUND_S + CLIENT_TIMEOUT_S + 30
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.cont_pg()

    def cleanup(self):
        self.sh.stop.set()
        self.cont_pg()
        for q in list(self.children):
            q.close()
        if self.proxy is not None:
            self.proxy.stop()
        with self.replica_lock:
            for r in self.replicas:
                r.stop()

    # -- the verdict
    def check_rows(self):
        """Every 200 has its row, no 503 (or 4xx) has one: the ledger
        against processed_messages, by (org, id), in one SQL join."""
        self.sh.ledger.close()
        path = os.path.join(self.args.out, "ledger.tsv")
        sql = ("CREATE TEMP TABLE ledger (org_id text, message_id text, "
               "status text, code text);\n"
               "\\copy ledger FROM '%s'\n"
               "SELECT l.status, l.code, count(*), count(p.message_id) "
               "FROM ledger l LEFT JOIN processed_messages p "
               "USING (org_id, message_id) GROUP BY 1, 2 ORDER BY 1, 2;\n"
               % path)
        res = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t",
                              "-v", "ON_ERROR_STOP=1", "-d",
                              self.args.super_url], input=sql,
                             capture_output=True, text=True, timeout=600,
                             check=False)
        if res.returncode != 0:
            self.sh.violation("soak_error", "ledger check: " + res.stderr)
            return {}
        rows = {}
        for line in res.stdout.splitlines():
            status, code, n, present = line.split("\t")
            n, present = int(n), int(present)
            rows[(status + " " + code).strip()] = {"answers": n,
                                                   "rows": present}
            if status == "200" and present < n:
                self.sh.violation("200_without_row", "%d answers %s without "
                                  "their row" % (n - present, status))
            elif (status.isdigit() and status not in ("200", "504")
                  and present > 0):
                self.sh.violation("refused_with_row", "%d answers %s %s "
                                  "with a row" % (present, status, code))
        return rows

    def verdict(self):
        rows = self.check_rows()
        rss = {"poold-%d" % r.i: {"restarted": True} for r in self.replicas
               if r.i not in self.rss_base}
        for i, (pid, kb) in sorted(self.rss_base.items()):
            last = self.rss_last.get(i)
            if last is None or last[0] != pid:
                rss["poold-%d" % i] = {"restarted": True}
                continue
            growth = (last[1] - kb) * 100.0 / kb
            rss["poold-%d" % i] = {"warm_kb": kb, "end_kb": last[1],
                                   "growth_pct": round(growth, 2)}
            if growth >= 5.0:
                self.sh.violation("rss_growth", "poold-%d: %d -> %d KiB "
                                  "(%.1f %%)" % (i, kb, last[1], growth))
        if len(rss) == 0 or all(v.get("restarted") for v in rss.values()):
            log("note: every replica was restarted after the warm-up: "
                "no RSS to compare")
        lat = []
        for v in self.sh.lat.values():
            lat.extend(v)
        lat.sort()

        def pct(p):
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) \
                if lat else None
        rev = sorted(self.sh.revocations)
        summary = {
            "run": self.run_id, "seconds": self.args.seconds,
            "warmup_s": self.args.warmup,
            "rate": self.args.rate, "budget": BUDGET,
            "bound_ms": BOUND_S * 1000,
            "requests": dict(sorted(self.sh.statuses.items())),
            "violations": dict(sorted(self.sh.violations.items())),
            "violation_examples": self.sh.examples,
            "faults": dict(sorted(self.sh.faults.items())),
            "notes": dict(sorted(self.sh.notes.items())),
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99),
                           "p999": pct(0.999),
                           "max": round(self.sh.lat_max, 1),
                           "over_bound_exempt_replica_killed":
                               self.sh.exempt},
            "rows": rows,
            "connections": {"samples": self.conn_samples,
                            "max": self.conn_max,
                            "samples_over": self.conn_over},
            "revocation_lag_s": {
                "count": len(rev),
                "max": round(rev[-1], 2) if rev else None,
                "p50": round(rev[len(rev) // 2], 2) if rev else None},
            "rss": rss,
            "poold_1_kb": {"warm": self.heap_base and {
                "heap_in_use": self.heap_base[0],
                "rss_anon": self.heap_base[1]},
                "end": self.heap_last and {
                    "heap_in_use": self.heap_last[0],
                    "rss_anon": self.heap_last[1]}}}
        with open(os.path.join(self.args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        self.write_plot_data()
        return summary

    def write_plot_data(self):
        with open(os.path.join(self.args.out, "latency.dat"), "w") as f:
            for sec in sorted(self.sh.lat):
                v = sorted(self.sh.lat[sec])
                f.write("%d %.2f %.2f %.2f %d\n" % (
                    sec, v[len(v) // 2], v[min(len(v) - 1,
                                               int(0.99 * len(v)))],
                    v[-1], len(v)))


def text_summary(s):
    out = ["poold fault soak %s: %d s, %d req/s target, budget %d, bound %d ms"
           % (s["run"], s["seconds"], s["rate"], s["budget"], s["bound_ms"])]
    out.append("requests by status (messages; admin calls prefixed):")
    for k, v in s["requests"].items():
        out.append("  %-40s %8d" % (k, v))
    lat = s["latency_ms"]
    out.append("latency from full send: p50 %s ms, p99 %s ms, p99.9 %s ms, "
               "max %s ms (%d over the bound while HAProxy retried past a "
               "killed replica: not counted)"
               % (lat["p50"], lat["p99"], lat["p999"], lat["max"],
                  lat["over_bound_exempt_replica_killed"]))
    c = s["connections"]
    out.append("connections: %d samples, max %d, %d samples over the limit"
               % (c["samples"], c["max"], c["samples_over"]))
    r = s["revocation_lag_s"]
    out.append("key revocations: %d, refused everywhere after p50 %s s, "
               "max %s s" % (r["count"], r["p50"], r["max"]))
    for k, v in s["rss"].items():
        if v.get("restarted"):
            out.append("RSS %s: restarted after the warm-up" % k)
        else:
            out.append("RSS %s: %d -> %d KiB (%+.2f %%)"
                       % (k, v["warm_kb"], v["end_kb"], v["growth_pct"]))
    h = s["poold_1_kb"]
    if h["warm"] and h["end"]:
        for k, what in (("heap_in_use", "heap in use (malloc_count)"),
                        ("rss_anon", "RssAnon (RSS less file pages)")):
            a, b = h["warm"][k], h["end"][k]
            out.append("poold-1 %s: %d -> %d KiB (%+.2f %%)"
                       % (what, a, b, (b - a) * 100.0 / max(1, a)))
    out.append("faults thrown:")
    for k, v in s["faults"].items():
        out.append("  %-40s %8d" % (k, v))
    for k, v in s["notes"].items():
        out.append("note: %s: %d" % (k, v))
    if s["violations"]:
        out.append("VIOLATIONS:")
        for k, v in s["violations"].items():
            out.append("  %-40s %8d" % (k, v))
            for ex in s["violation_examples"].get(k, [])[:3]:
                out.append("      e.g. %s" % ex)
    else:
        out.append("violations: none")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--port", type=int, required=True,
                   help="HAProxy's port; the replicas take the next three")
    p.add_argument("--poold", required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--super-url", required=True)
    p.add_argument("--pg-dir", required=True)
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--pg-sh", required=True)
    p.add_argument("--haproxy-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--malloc-count", default="",
                   help="bench/malloc_count.so, preloaded into poold-1")
    p.add_argument("--sample-ms", type=int, default=100)
    a = p.parse_args()
    a.warmup = min(max(15, a.seconds // 3), 300)
    a.cooldown = min(max(10, a.seconds // 10), 30)
    a.rss_every = 2.0 if a.seconds <= 600 else 10.0
    a.progress = 10 if a.seconds <= 600 else 60
    if a.seconds < a.warmup + a.cooldown + 10:
        p.error("--seconds: at least %d" % (a.warmup + a.cooldown + 10))
    soak = Soak(a)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        soak.run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        soak.cleanup()
        return 130
    except Exception as e:  # noqa: BLE001 (set-up failed: say why)
        log("error: %s" % e)
        soak.cleanup()
        return 2
    soak.cleanup()
    s = soak.verdict()
    text = text_summary(s)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 1 if s["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
