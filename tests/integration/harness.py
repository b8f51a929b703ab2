"""harness.py — what every Python integration suite shares: the test
environment, psql and the test cluster, waits with deadlines, ports, the
OpenAPI check, a poold process, and replicas with a connection sampler.

Environment (set by tests/tests.cmake for every suite): POOLD_BIN,
DATABASE_URL (poold's role), POOLD_TEST_ADMIN_URL (the superuser, to set up
orgs and check rows), POOLD_TEST_PG_DIR and POOLD_TEST_PG_PORT (the private
cluster scripts/pg.sh runs), POOLD_SOURCE_DIR (openapi.yaml, scripts/).

A suite imports what it needs by name:

    from harness import TOKEN, Poold, psql, require_env, wait_for

and calls require_env() in its setUpModule, so that running it outside
CTest skips instead of failing on a missing variable.
"""
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import jsonschema
import yaml

BIN = os.environ.get("POOLD_BIN", "")
DATABASE_URL = os.environ.get("DATABASE_URL", "")
ADMIN_URL = os.environ.get("POOLD_TEST_ADMIN_URL", "")
PG_DIR = os.environ.get("POOLD_TEST_PG_DIR", "")
PG_PORT = os.environ.get("POOLD_TEST_PG_PORT", "")
SOURCE_DIR = os.environ.get(
    "POOLD_SOURCE_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# The admin token of every poold a test starts.
TOKEN = "tok-" + uuid.uuid4().hex


def require_env(*extra):
    """Skip the module unless the variables CTest sets are there."""
    for name in ("POOLD_BIN", "DATABASE_URL", "POOLD_TEST_ADMIN_URL") + extra:
        if not os.environ.get(name):
            raise unittest.SkipTest(name + " is not set")


# ---- the database -----------------------------------------------------------

def psql(sql, timeout=60):
    """Run SQL as the superuser; returns stdout (unaligned, tuples only)."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL,
         "-c", sql], capture_output=True, text=True, timeout=timeout,
        check=True)
    return out.stdout.strip()


def pg(command):
    """scripts/pg.sh on the test cluster: start, stop, restart."""
    args = [os.path.join(SOURCE_DIR, "scripts", "pg.sh"), command, PG_DIR]
    if command in ("start", "restart"):
        args.append(PG_PORT)
    subprocess.run(args, check=True, timeout=120)


# ---- waits and ports --------------------------------------------------------

def wait_for(pred, timeout, what, interval=0.02):
    """Poll pred() until truthy or the deadline; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class OpenTx:
    """A psql session (superuser, url's database) holding a transaction
    open: BEGIN, then sql, whose last line of output is returned by
    begin(); end() commits or rolls back. Idempotent; a test registers
    end() as a cleanup."""

    def __init__(self, url=None):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-d", url or ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)

    def begin(self, sql):
        self.proc.stdin.write("BEGIN; %s\n" % sql)
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def end(self, how="ROLLBACK"):
        if self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write(how + ";\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)



def cpu_seconds(pid):
    """User + system time of the whole process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_bytes(pid, field="VmRSS"):
    """A process's memory figure from /proc/<pid>/status: VmRSS (now) or
    VmHWM (its peak so far), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


# POOLD_TEST_PORTS=lo-hi (optional): the ports every poold and helper a
# suite starts listen on, for a machine shared with other test runs (a
# poold then gets one of them rather than the kernel's choice).
PORTS = os.environ.get("POOLD_TEST_PORTS", "")


def free_port():
    """A free port below Linux's ephemeral range (32768-60999), so that no
    outgoing connection takes it before our server binds it (or in
    POOLD_TEST_PORTS)."""
    rnd = random.Random()
    lo, hi = (map(int, PORTS.split("-")) if PORTS else (20000, 31999))
    while True:
        port = rnd.randrange(lo, hi + 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()


def private_tempdir(prefix):
    """A directory of this suite's own for the logs of the processes it
    starts (other test runs clean up /tmp/poold-test-* by name); every
    later tempfile goes there. The suite removes it in tearDownModule,
    with remove_private_tempdir()."""
    tempfile.tempdir = tempfile.mkdtemp(prefix=prefix)
    return tempfile.tempdir


def remove_private_tempdir(path):
    """Remove private_tempdir()'s directory, and send later tempfiles to
    the default place again: suites run in one process (python3 -m
    unittest a b) once failed when the next one's files went there."""
    shutil.rmtree(path, ignore_errors=True)
    if tempfile.tempdir == path:
        tempfile.tempdir = None


# ---- the OpenAPI contract ---------------------------------------------------

with open(os.path.join(SOURCE_DIR, "openapi.yaml"), encoding="utf-8") as f:
    SPEC = yaml.safe_load(f)


def resolve(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        node = SPEC
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def check_against_spec(route, method, status, headers, body):
    """The response must be documented; JSON bodies must match the schema
    and documented headers must be present."""
    op = SPEC["paths"][route][method.lower()]
    resp = op["responses"].get(str(status))
    assert resp is not None, f"{method} {route} {status} is not documented"
    resp = resolve(resp)
    for name, h in resp.get("headers", {}).items():
        h = resolve(h)
        if name.lower() not in headers:
            assert not h.get("required"), f"header {name} missing"
            continue
        schema = h.get("schema", {})
        if schema.get("type") == "integer":
            int(headers[name.lower()])
    for ctype, media in resp.get("content", {}).items():
        if ctype == "application/json":
            assert headers.get("content-type") == "application/json"
            schema = dict(resolve(media["schema"]))
            schema["components"] = SPEC["components"]
            jsonschema.Draft202012Validator(schema).validate(json.loads(body))
        else:
            assert headers.get("content-type") == ctype


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def code(self):
        return self.json()["error"]["code"]


# ---- a poold process --------------------------------------------------------

class Poold:
    """The real binary on a port of its own (127.0.0.1:0 unless env says
    POOLD_LISTEN), admin token TOKEN, org API keys off unless env turns
    them on. The environment's POOLD_* settings are not passed on: a test
    sees the defaults plus what it asks for. Starts listening, and ready
    (GET /readyz 200) unless wait_ready is False."""

    def __init__(self, *args, env=None, wait_ready=True, preexec_fn=None):
        self.log = tempfile.NamedTemporaryFile(
            prefix="poold-test-", suffix=".log", delete=False)
        self.output = None
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("POOLD_") or k in ("POOLD_BIN",)}
        e.update({"DATABASE_URL": DATABASE_URL, "POOLD_ADMIN_TOKEN": TOKEN,
                  "POOLD_LISTEN": "127.0.0.1:0",
                  # The contract without org API keys (test_tenants.py
                  # covers them).
                  "POOLD_CLIENT_AUTH": "none"})
        e.update({k: str(v) for k, v in (env or {}).items()})
        # A fixed port is known without the "listening" line (which a
        # POOLD_LOG_LEVEL above info does not write).
        m = re.fullmatch(r".*:([1-9][0-9]*)", e["POOLD_LISTEN"])
        self.fixed_port = m and m.group(1)
        # One of POOLD_TEST_PORTS rather than the kernel's choice; still
        # known from the "listening" line, which says poold listens.
        if PORTS and e["POOLD_LISTEN"] == "127.0.0.1:0":
            e["POOLD_LISTEN"] = "127.0.0.1:%d" % free_port()
        self.proc = subprocess.Popen([BIN, *args], env=e,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.log, preexec_fn=preexec_fn)
        try:
            m = wait_for(self._port, 20, "poold to listen")
            self.port = int(m)
            if wait_ready:
                wait_for(self.ready, 20, "readiness", interval=0.05)
        except BaseException:
            # A server that did not come up is no test's to stop: never
            # leave it running past the failure.
            self.proc.kill()
            self.proc.wait()
            raise

    def logtext(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def _port(self):
        if self.proc.poll() is not None:
            raise AssertionError("poold exited early:\n" + self.logtext())
        if self.fixed_port:
            return self.fixed_port
        m = re.search(r'listening .*port="(\d+)"', self.logtext())
        return m and m.group(1)

    def request(self, method, path, body=None, headers=None, token=None,
                route=None, conn=None, timeout=30):
        """One request; a dict or list body is sent as JSON. With route
        (the OpenAPI path), the answer is checked against openapi.yaml."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if conn is None:
                c.close()
        resp = Response(r.status, hdrs, data)
        if route is not None:
            check_against_spec(route, method, r.status, hdrs, data)
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def process(self, msg, **kw):
        return self.request("POST", "/process", body=msg, route="/process",
                            **kw)

    def pool(self, org):
        r = self.get("/pools/" + org, token=TOKEN, route="/pools/{org_id}")
        assert r.status == 200, r.body
        return r.json()

    def _answers(self, path):
        try:
            return self.get(path, timeout=2).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def alive(self):
        """GET /healthz answers 200."""
        return self._answers("/healthz")

    def ready(self):
        """GET /readyz answers 200."""
        return self._answers("/readyz")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signal it (if still running), wait for the exit and return its
        code; the log stays readable as self.output. Calling it again
        returns the same code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.output is None:
                self.output = self.logtext()
                # A sanitizer's report ends up here; a signal that killed
                # it was the test's own.
                if self.proc.returncode not in (0, -sig):
                    sys.stderr.write("poold exited %s; its log:\n%s\n" % (
                        self.proc.returncode, self.output[-20000:]))
                os.unlink(self.log.name)
        return code

    def kill(self):
        """SIGKILL: no drain, no goodbye (a replica's lease has to
        expire)."""
        self.stop(signal.SIGKILL, timeout=10)


def stop_if_running(p):
    """SIGTERM and a clean exit (a sanitizer's report makes it non-zero)."""
    if p.proc.poll() is None:
        code = p.stop()
        assert code == 0, "poold exited %s" % code


# ---- replicas ---------------------------------------------------------------

# The cluster budget (POOLD_CLUSTER_MAX_CONNS) and each replica's own cap
# (POOLD_DB_MAX_CONNS) of start_replica().
BUDGET = 9
LOCAL_MAX = 6


def replica_env(**extra):
    env = {"POOLD_CLIENT_AUTH": "none",
           "POOLD_CLUSTER_MAX_CONNS": str(BUDGET),
           "POOLD_DB_MAX_CONNS": str(LOCAL_MAX),
           "POOLD_POOL_SIZE": "4",
           "POOLD_ACQUIRE_TIMEOUT_MS": "2000",
           "POOLD_PROCESS_COST_MS": "2"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_replica(**extra):
    """A poold in the cluster, listening (not necessarily ready yet)."""
    return Poold(env=replica_env(**extra), wait_ready=False)


def cluster(p):
    """GET /cluster: the replicas p sees."""
    r = p.get("/cluster", token=TOKEN, route="/cluster")
    assert r.status == 200, r.body
    return r.json()["replicas"]


def settled(p, n):
    """True when p sees n live replicas whose shares add up to the budget
    and it holds its whole share (up to its local maximum)."""
    view = cluster(p)
    mine = [r for r in view if r.get("self")]
    return (len(view) == n and sum(r["share"] for r in view) == BUDGET
            and len(mine) == 1
            and mine[0]["granted"] == min(mine[0]["share"], LOCAL_MAX))


class Sampler(threading.Thread):
    """pg_stat_activity every 50 ms through one psql session: the number of
    poold connections (application_name starting with poold), split into
    housekeeping and the rest."""

    SQL = ("SELECT count(*) FILTER (WHERE application_name LIKE 'poold%'),"
           " count(*) FILTER (WHERE application_name = 'poold-housekeeping')"
           " FROM pg_stat_activity;\n")

    def __init__(self):
        super().__init__(daemon=True)
        self.stop_event = threading.Event()
        self.samples = []  # (t, total, housekeeping, replicas running)
        self.running = 0   # replica processes alive, kept by the test
        self.psql = self._session()

    @staticmethod
    def _session():
        return subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-F", " ", "-d", ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def run(self):
        while not self.stop_event.is_set():
            running_before = self.running
            try:
                self.psql.stdin.write(self.SQL)
                self.psql.stdin.flush()
                total, hk = map(int, self.psql.stdout.readline().split())
            except (OSError, ValueError):
                # The session failed (a busy cluster refused it, say):
                # a new one, rather than a thread that dies unseen.
                self.psql.kill()
                self.psql.wait(10)
                self.psql = self._session()
                self.stop_event.wait(0.05)
                continue
            self.samples.append((time.monotonic(), total, hk,
                                 max(running_before, self.running)))
            self.stop_event.wait(0.05)

    def stop(self):
        self.stop_event.set()
        self.join(10)
        try:
            self.psql.stdin.close()
        except OSError:
            pass
        self.psql.wait(10)

    def check(self, tc):
        tc.assertGreater(len(self.samples), 20)
        for t, total, hk, running in self.samples:
            tc.assertLessEqual(total - hk, BUDGET,
                               "pooled connections over the budget: %r"
                               % ((t, total, hk, running),))
            tc.assertLessEqual(total, BUDGET + running,
                               "over budget + one housekeeping connection "
                               "per replica: %r" % ((t, total, hk, running),))


class ReplicaLoad:
    """Threads posting unique messages to the live replicas in turn. With
    retry, a message answered 503/504 or cut off is sent again (same id and
    payload) until it is answered 200 or retry seconds have passed."""

    def __init__(self, orgs, threads=8, retry=0):
        self.orgs = orgs
        self.retry = retry
        self.final = {}  # message id -> last status, with retry
        self.targets = []
        self.lock = threading.Lock()
        self.results = []  # (org, id, status or "conn")
        # each "conn": (time.time() at connect, at the error, client port,
        # id, the client's error)
        self.cut = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(threads)]

    def set_targets(self, replicas):
        with self.lock:
            self.targets = list(replicas)

    def run(self):
        rnd = random.Random()
        while not self.stop_event.is_set():
            with self.lock:
                if not self.targets:
                    continue
                p = rnd.choice(self.targets)
            org = rnd.choice(self.orgs)
            mid = org + "_" + uuid.uuid4().hex[:12]
            deadline = time.monotonic() + self.retry
            while True:
                status = self.send(p, org, mid)
                with self.lock:
                    self.results.append((org, mid, status))
                    self.final[mid] = status
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)

    def send(self, p, org, mid):
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=15)
        port, began = None, time.time()
        try:
            c.connect()
            port = c.sock.getsockname()[1]  # names it in a proxy's log
            # No schema check: through a proxy, 503/504 may be its own.
            return p.request("POST", "/process", conn=c, body={
                "id": mid, "org_id": org, "payload": "ab"}).status
        except (OSError, http.client.HTTPException) as e:
            # HTTPException: cut after the status line (IncompleteRead)
            with self.lock:
                self.cut.append((began, time.time(), port, mid, repr(e)))
            return "conn"  # the replica died under it
        finally:
            c.close()

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            if t.ident is not None:
                t.join(30)
