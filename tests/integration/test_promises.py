"""test_promises.py — promises that hold where two paths meet (issue 18):
background work never waits behind a request, a replica keeps to its grant,
a keep-alive connection keeps to the read deadline, a joining replica waits
for a grant, per-org series exist from the start (DESIGN.md "Background
work never waits behind a request", "Replicas").

Two poold on one database, as test_replicas.py does; the harness is
harness.py's.
"""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from harness import (ADMIN_URL, TOKEN, OpenTx, Poold, Sampler, cluster,
                     psql, require_env, stop_if_running, wait_for)
from test_clients import make_cert

P = "tp" + uuid.uuid4().hex[:8] + "_"
ORG = P + "a"
ORG_LOCK = P + "locked"  # its orgs row is held locked by another session
RULES = json.dumps({"rules": [{"type": "max_payload_bytes", "value": 1024}]})


def setUpModule():
    require_env()
    psql("INSERT INTO orgs (org_id, config) VALUES " + ",".join(
        "('%s', '%s')" % (o, RULES) for o in (ORG, ORG_LOCK)))


def tearDownModule():
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
            f"DELETE FROM org_keys WHERE org_id LIKE '{P}%';"
            f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


def msg(org=ORG):
    return {"id": P + uuid.uuid4().hex[:12], "org_id": org, "payload": "x"}


def start(testcase, **env):
    p = Poold(env={k: str(v) for k, v in env.items()}, wait_ready=False)
    testcase.addCleanup(stop_if_running, p)
    return p


def background_load(test, servers, per_server, ignored):
    """Threads posting new messages to each server until the test ends
    (stopped and joined by a cleanup); errors of the kinds ignored are
    the faults the test throws."""
    stop = threading.Event()

    def load(p):
        while not stop.is_set():
            try:
                p.process(msg(), timeout=10)
            except ignored:
                pass
    loaders = [threading.Thread(target=load, args=(p,))
               for p in servers for _ in range(per_server)]
    for t in loaders:
        t.start()

    def stop_load():
        stop.set()
        for t in loaders:
            t.join(30)
    test.addCleanup(stop_load)


class RowLock:
    """A psql session that holds a row of orgs locked (FOR UPDATE) until
    release(): admin writes to that org wait on it."""

    def __init__(self, org):
        self.psql = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-d", ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)
        self.psql.stdin.write(
            "BEGIN; SELECT org_id FROM orgs WHERE org_id = '%s' FOR UPDATE;\n"
            % org)
        self.psql.stdin.flush()
        assert self.psql.stdout.readline().strip() == org

    def release(self):
        if self.psql.poll() is None:
            self.psql.stdin.write("ROLLBACK;\n")
            self.psql.stdin.close()
            self.psql.wait(10)


def complete(answer):
    """Whether answer holds a whole HTTP response (with Content-Length)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


class KeepAliveReadDeadline(unittest.TestCase):
    """Item 4: POOLD_REQUEST_READ_TIMEOUT_S holds on a keep-alive
    connection whose next request's first lines come at once."""

    READ_TIMEOUT_S = 2

    def answered(self, sent, tls=False):
        """A connection to a poold with a 2 s read timeout that sent
        `sent` at once and read the answer to its first request."""
        env = {}
        if tls:
            d = tempfile.mkdtemp(prefix="poold-tls-")
            self.addCleanup(shutil.rmtree, d, True)
            cert, key = make_cert(d)
            env = dict(POOLD_TLS_CERT=cert, POOLD_TLS_KEY=key)
        p = start(self, POOLD_REQUEST_READ_TIMEOUT_S=self.READ_TIMEOUT_S,
                  POOLD_CLIENT_TIMEOUT_S=60, **env)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        if tls:
            s = ssl.create_default_context(cafile=cert).wrap_socket(
                s, server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(sent)
        self.read_answer(s)
        return s

    def read_answer(self, s):
        got = b""
        while not complete(got):
            chunk = s.recv(4096)
            self.assertTrue(chunk, "closed before the answer")
            got += chunk
        return got

    def closed_in_time(self, s):
        """Whether the server closes s within the read timeout + 1.5 s."""
        t0 = time.monotonic()
        deadline = t0 + self.READ_TIMEOUT_S + 1.5
        closed = False
        while not closed and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                closed = not s.recv(4096)
            except ConnectionResetError:
                closed = True
            except socket.timeout:
                break
        return closed

    def assert_closed_in_time(self, s):
        self.assertTrue(self.closed_in_time(s), "still open past a %d s "
                        "read timeout + 1.5 s" % self.READ_TIMEOUT_S)

    def test_a_partial_next_request_is_cut_within_the_read_timeout(self):
        s = self.answered(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        # The next request's first lines at once, then silence.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        self.assert_closed_in_time(s)

    def test_a_next_request_begun_in_the_same_send_is_cut_in_time(self):
        # The start of the next request comes in one send with the whole
        # previous one: no byte follows the answer, and its request line
        # never completes.
        s = self.answered(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /heal")
        self.assert_closed_in_time(s)

    def test_a_body_and_a_next_request_in_one_send_are_cut_in_time(self):
        # As above after a request with a body (what it took counts it).
        s = self.answered(
            b"POST /v1/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3"
            b"\r\n\r\nabcGET /heal")
        self.assert_closed_in_time(s)

    def assert_idle_not_cut(self, s):
        self.assertFalse(self.closed_in_time(s),
                         "an idle keep-alive connection was cut at the "
                         "read timeout")
        s.settimeout(10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b'"ok"}', self.read_answer(s))

    def test_an_idle_connection_after_a_body_is_not_cut(self):
        # What a request with a body took is counted exactly: a client
        # that sends nothing more is not taken for one that began anew.
        self.assert_idle_not_cut(self.answered(
            b"POST /v1/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3"
            b"\r\n\r\nabc"))

    def test_an_idle_tls_connection_is_not_cut(self):
        # Under TLS the bytes received hold the handshake and records:
        # they are never taken for a next request.
        self.assert_idle_not_cut(self.answered(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", tls=True))


class PerOrgSeries(unittest.TestCase):
    """Item 6: an org's series exist at 0 once it has a pool."""

    def test_series_exist_at_zero_from_the_first_request(self):
        p = start(self)
        wait_for(lambda: p.get("/readyz").status == 200, 20, "ready")
        self.assertEqual(p.process(msg()).status, 200)
        text = p.get("/metrics", token=TOKEN).body.decode()
        for series in ("poold_pool_held_too_long_total",
                       "poold_rate_limited_total"):
            line = '%s{org="%s"} 0' % (series, ORG)
            self.assertTrue(line in text.splitlines(), line + " missing")


class JoiningReplica(unittest.TestCase):
    """Item 5: a replica with no grant yet is "starting" and lets requests
    wait for one (pool_exhausted after the acquire timeout), never
    database_unavailable while the database answers."""

    def test_no_grant_yet_waits_and_is_starting(self):
        env = dict(POOLD_CLUSTER_MAX_CONNS=1, POOLD_DB_MAX_CONNS=1,
                   POOLD_DB_MIN_IDLE=1, POOLD_ACQUIRE_TIMEOUT_MS=1000)
        a = start(self, **env)
        wait_for(lambda: a.get("/readyz").status == 200, 20, "A ready")
        # The budget of 1 is A's: B's fair share is 0 while A lives.
        b = start(self, **env)
        wait_for(lambda: len(cluster(b)) == 2, 20, "B to join")
        r = b.get("/readyz", route="/readyz")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["status"], "starting")
        t0 = time.monotonic()
        r = b.process(msg())
        took = time.monotonic() - t0
        self.assertEqual((r.status, r.code), (503, "pool_exhausted"))
        self.assertGreater(took, 0.8, "answered without waiting")
        self.assertLess(took, 1000 / 1000 + 2)
        # Counted as the org's timeout (the seed's contract), not as a
        # failed build, and not logged as one.
        st = b.pool(ORG)
        self.assertGreaterEqual(st["total_timeouts"], 1)
        self.assertEqual(st["create_failures"], 0)
        self.assertNotIn("service build failed", b.logtext())
        # A message lookup waits for a connection too: pool_exhausted
        # with Retry-After, not database_unavailable (the database is up).
        r = b.get("/orgs/%s/messages/%s" % (ORG, P + "nosuch"), token=TOKEN,
                  route="/orgs/{org_id}/messages/{message_id}")
        self.assertEqual((r.status, r.code), (503, "pool_exhausted"), r.body)
        self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
        # A request waiting on B is served once A leaves (a grant comes).
        out = {}
        slow = dict(env, POOLD_ACQUIRE_TIMEOUT_MS=8000)
        c = start(self, **slow)
        wait_for(lambda: len(cluster(c)) == 3, 20, "C to join")
        t = threading.Thread(target=lambda: out.update(r=c.process(msg())))
        t.start()
        self.assertEqual(a.stop(), 0)
        b.stop()
        t.join(30)
        self.assertEqual(out["r"].status, 200, out["r"].body)
        wait_for(lambda: c.get("/readyz").status == 200, 10, "C ready")


class BackgroundWork(unittest.TestCase):
    """Items 1 and 3: admin writes waiting on a locked row neither delay
    the watch (a pause made on another poold reaches this one within
    2 s) nor go unanswered past acquire + statement + 1 s."""

    def test_admin_calls_behind_a_lock_neither_stop_the_watch_nor_hang(self):
        env = dict(POOLD_ACQUIRE_TIMEOUT_MS=1000,
                   POOLD_STATEMENT_TIMEOUT_MS=2000)
        a = start(self, **env)
        b = start(self, **env)
        for p in (a, b):
            wait_for(lambda: p.get("/readyz").status == 200, 20, "ready")
        self.assertEqual(a.process(msg()).status, 200)
        lock = RowLock(ORG_LOCK)
        self.addCleanup(lock.release)
        answers = []

        def resize():
            t0 = time.monotonic()
            r = a.request("PUT", "/pools/%s/size" % ORG_LOCK,
                          body={"max_size": 3}, token=TOKEN,
                          route="/pools/{org_id}/size")
            answers.append((time.monotonic() - t0, r.status, r.body))
        threads = [threading.Thread(target=resize) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # let them queue behind the lock (not a sync)
        t0 = time.monotonic()
        r = b.request("POST", "/pools/%s/pause" % ORG, token=TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.addCleanup(lambda: b.request("POST", "/pools/%s/resume" % ORG,
                                          token=TOKEN))
        wait_for(lambda: a.process(msg()).status == 503, 10,
                    "A to refuse the paused org", interval=0.05)
        paused_after = time.monotonic() - t0
        for t in threads:
            t.join(30)
        self.assertEqual(len(answers), 3)
        for took, status, body in answers:
            self.assertLessEqual(took, 1 + 2 + 1, (took, status, body))
            self.assertEqual(status, 503, body)
            self.assertEqual(json.loads(body)["error"]["code"],
                             "database_unavailable")
            self.assertIn("stored", json.loads(body)["error"]["message"])
        self.assertLess(paused_after, 2.0,
                        "the pause reached A after %.1f s" % paused_after)


class ReplicaBudget(unittest.TestCase):
    """Item 2: a replica whose lease lapsed holds nothing until renewed,
    whatever its heartbeat waits on, and renews with what is free, not
    with its old grant."""

    POOLED = ("SELECT count(*) FROM pg_stat_activity WHERE application_name"
              " LIKE 'poold%' AND application_name <> 'poold-housekeeping'")

    def lock_heartbeats(self):
        """Every heartbeat waits on this lock until its end()."""
        lock = OpenTx()
        self.addCleanup(lock.end)
        self.assertEqual(lock.begin("LOCK TABLE cluster_replicas IN ACCESS "
                                    "EXCLUSIVE MODE; SELECT 'locked';"),
                         "locked")
        return lock

    def test_lapsed_lease_fences_on_time_and_renews_within_the_budget(self):
        budget = 4
        # The statement bound is longer than the lease: only a fence on a
        # timer of its own closes the connections on time. Slow requests
        # keep every connection a replica may have busy, so the first to
        # renew after the lapse holds the whole budget for a while.
        env = dict(POOLD_CLUSTER_MAX_CONNS=budget, POOLD_DB_MAX_CONNS=4,
                   POOLD_DB_MIN_IDLE=4, POOLD_STATEMENT_TIMEOUT_MS=30000,
                   POOLD_PROCESS_COST_MS=1500)
        a = start(self, **env)
        wait_for(lambda: a.get("/readyz").status == 200, 20, "A ready")
        b = start(self, **env)

        def halves():
            view = cluster(b)
            return (len(view) == 2 and
                    sorted(r["granted"] for r in view) == [2, 2] and
                    psql(self.POOLED) == str(budget))
        wait_for(halves, 20, "two grants of 2, all open", interval=0.1)
        background_load(self, [a, b], 4, OSError)
        # Every heartbeat waits on this lock for longer than the lease.
        lock = self.lock_heartbeats()
        t0 = time.monotonic()
        try:
            wait_for(lambda: psql(self.POOLED) == "0", 10,
                        "the replicas to close their pooled connections",
                        interval=0.1)
            took = time.monotonic() - t0
            # Fenced at half the 7 s lease after the last renewal.
            self.assertLess(took, 7 / 2 + 1.5)
            # Past the lease: each one's row is dead to the other.
            wait_for(lambda: time.monotonic() - t0 > 8.5, 10, "8.5 s")
            sampler = Sampler()
            sampler.start()
            self.addCleanup(sampler.stop)
        finally:
            lock.end()
        wait_for(lambda: sorted(r["granted"] for r in cluster(b))
                    == [2, 2], 20, "two grants of 2 again", interval=0.1)
        time.sleep(1)  # a second of samples once settled (not a sync)
        sampler.stop()
        self.assertGreater(len(sampler.samples), 10)
        over = [s for s in sampler.samples if s[1] - s[2] > budget]
        self.assertEqual(over, [], "pooled connections over the budget")


    def test_the_fence_ends_statements_in_flight(self):
        """A statement that waits (here on another session's row) does not
        keep its connection past the fence: it ends at the fence, its
        request answers 504 commit_unknown (the write was sent), and its
        backend is gone soon after. Before, it stayed until its statement
        timeout (30 s here), past the lease."""
        env = dict(POOLD_CLUSTER_MAX_CONNS=4, POOLD_DB_MAX_CONNS=4,
                   POOLD_STATEMENT_TIMEOUT_MS=30000,
                   POOLD_ACQUIRE_TIMEOUT_MS=30000)
        a = start(self, **env)
        wait_for(lambda: a.get("/readyz").status == 200, 20, "A ready")
        m = msg()
        holder = OpenTx()
        self.addCleanup(holder.end)
        self.assertEqual(holder.begin(
            "INSERT INTO processed_messages (org_id, message_id, passed,"
            " checks, payload_sha256) VALUES ('%s', '%s', true, 0,"
            " sha256('x')); SELECT 'held';" % (m["org_id"], m["id"])), "held")
        answer = {}

        def post():
            try:
                answer["r"] = a.process(m, timeout=60)
            except OSError as e:
                answer["e"] = e
        poster = threading.Thread(target=post)
        poster.start()
        self.addCleanup(poster.join, 60)
        waiting = ("SELECT count(*) FROM pg_stat_activity WHERE"
                   " application_name = 'poold' AND wait_event_type = 'Lock'")
        wait_for(lambda: psql(waiting) == "1", 10, "the write to wait")
        lock = self.lock_heartbeats()
        t0 = time.monotonic()
        try:
            poster.join(20)
            took = time.monotonic() - t0
            self.assertFalse(poster.is_alive(), "the write still waits:\n"
                             + a.logtext()[-3000:])
            # The fence comes at most half the 7 s lease after the last
            # renewal (one tick, 1 s, before the lock at most).
            self.assertLess(took, 7 / 2 + 1.5)
            r = answer.get("r")
            self.assertIsNotNone(r, answer)
            self.assertEqual((r.status, r.code), (504, "commit_unknown"),
                             r.body)
            wait_for(lambda: re.search(r'status="504".*fenced',
                                       a.logtext()), 5,
                     "the 504's log line to say why")
            # Its backend notices its client left within a second.
            wait_for(lambda: psql(self.POOLED) == "0", 5,
                     "the fenced backends to be gone", interval=0.1)
            self.assertLess(time.monotonic() - t0, 7)
        finally:
            lock.end()
            holder.end()
        # Renewed, it serves again.
        wait_for(lambda: a.get("/readyz").status == 200, 20, "A ready again")
        self.assertEqual(a.process(msg()).status, 200)
        self.assertIn("cluster lease not renewed", a.logtext())


class ClosedBackendsBudget(unittest.TestCase):
    """The budget as PostgreSQL counts it (docs/reliability.md): a
    connection poold gives up on while its backend does not answer (the
    statement's deadline passed) keeps its place until pg_stat_activity
    shows that backend gone. Before, poold opened a replacement at once
    and PostgreSQL counted both: the soak's 16 against 15."""

    POOLED = ("SELECT string_agg(pid::text, ' ') FROM pg_stat_activity"
              " WHERE application_name = 'poold'")

    def test_backends_that_do_not_answer_keep_their_places(self):
        budget = 3
        p = start(self, POOLD_DB_MAX_CONNS=budget, POOLD_DB_MIN_IDLE=budget,
                  POOLD_STATEMENT_TIMEOUT_MS=1000,
                  POOLD_ACQUIRE_TIMEOUT_MS=1000)
        wait_for(p.ready, 20, "ready", interval=0.05)
        background_load(self, [p], 6, (OSError, AssertionError))

        def pooled():
            return (psql(self.POOLED) or "").split()
        wait_for(lambda: len(pooled()) == budget, 20,
                 "every pooled connection open")
        # Every pooled backend stops answering (as in a frozen database,
        # but the postmaster still accepts new connections, so a
        # replacement would be visible at once).
        stopped = [int(x) for x in pooled()]
        sampler = Sampler()
        sampler.start()
        self.addCleanup(sampler.stop)

        def cont():
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.addCleanup(cont)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

        def closing():
            r = p.get("/stats", token=TOKEN, route="/stats")
            return r.json()["connections"].get("closing", 0)

        def over():
            return [s for s in sampler.samples if s[1] - s[2] > budget]
        # The load gives each a statement, whose deadline (acquire +
        # statement + slack) passes: poold gives up on every one. Before
        # the fix it then opened others beside them (over the budget).
        wait_for(lambda: over() or closing() == len(stopped), 20,
                 "poold to give up on the stopped backends")
        time.sleep(2)  # two ticks' checks of samples (not a sync)
        self.assertGreater(len(sampler.samples), 20)
        self.assertEqual(over(), [], "backends over the budget while the "
                         "closed ones were still there")
        self.assertEqual(sorted(map(int, pooled())), sorted(stopped),
                         "no replacement beside them")
        m = p.get("/metrics", token=TOKEN).body.decode()
        self.assertIn("\npoold_db_connections_closing %d\n" % len(stopped),
                      m)
        cont()
        # Once they are gone the places come back, within a tick or two.
        wait_for(lambda: closing() == 0 and not set(pooled())
                 & set(map(str, stopped)), 20, "the stopped backends gone",
                 interval=0.1)
        wait_for(lambda: len(pooled()) == budget, 20,
                 "connections in the places given back", interval=0.1)
        sampler.stop()
        self.assertEqual(over(), [], "backends over the budget")
        for t, total, hk, _ in sampler.samples:
            self.assertLessEqual(total, budget + 1, (t, total, hk))

if __name__ == "__main__":
    unittest.main()
