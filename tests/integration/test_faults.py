"""Fault tests: the real poold binary against a real PostgreSQL that fails.

The database restarts under load, its backends are terminated or time out,
it is down at start-up; clients hold connections idle or open more than the
limit. The promise under test: only 200 and 503 answers, service resumes
without a restart, and every 200 has its committed row.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
import uuid

from harness import (ADMIN_URL, PG_DIR, TOKEN, Poold, pg, psql,
                     require_env, wait_for)


def setUpModule():
    require_env("POOLD_TEST_PG_DIR", "POOLD_TEST_PG_PORT")


def send(server, org, msg_id, payload="abcdef01", timeout=30):
    """POST /process of one message: (status, headers, parsed body)."""
    r = server.request("POST", "/process", timeout=timeout, body={
        "id": msg_id, "org_id": org, "payload": payload})
    return r.status, r.headers, json.loads(r.body) if r.body else None


def pg_pids():
    """The postmaster and every process it started."""
    with open(os.path.join(PG_DIR, "postmaster.pid")) as f:
        master = int(f.readline())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                         text=True).stdout.split()
    return [master] + [int(p) for p in out]


def pg_signal(sig):
    for pid in pg_pids():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def hold_row_lock(org, msg_id, seconds=30):
    """Another session inserts the message and keeps its transaction open:
    an insert of the same key waits for that row lock."""
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL,
         "-c", "BEGIN", "-c",
         "INSERT INTO processed_messages (org_id, message_id, passed, "
         "checks, payload_sha256) VALUES ('%s', '%s', true, 0, '\\x00')"
         % (org, msg_id), "-c", "SELECT pg_sleep(%d)" % seconds,
         "-c", "ROLLBACK"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: psql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
        "'SELECT pg_sleep(%d)%%'" % seconds) == "1", 10, "the lock holder")
    return holder


def release_row_lock(holder, seconds=30):
    holder.kill()
    holder.wait()
    psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         "WHERE query LIKE 'SELECT pg_sleep(%d)%%'" % seconds)


def rows_for(ids):
    """Rows of these message ids (queried in chunks: a list of thousands
    would not fit psql's command line)."""
    total = 0
    for k in range(0, len(ids), 500):
        lst = ",".join("'%s'" % i for i in ids[k:k + 500])
        total += int(psql("SELECT count(*) FROM processed_messages WHERE "
                          "message_id IN (%s)" % lst))
    return total


class Load:
    """Threads posting unique messages until stopped; records every answer."""

    def __init__(self, server, threads=4, orgs=8):
        self.server = server
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok_ids = []
        self.ids_by_status = {}
        self.statuses = {}
        self.errors = []
        self.slowest = 0.0
        self.threads = [threading.Thread(target=self.run, args=(i, orgs))
                        for i in range(threads)]

    def run(self, n, orgs):
        i = 0
        while not self.stop_flag.is_set():
            org = "org_%03d" % ((n + i) % orgs + 40)
            msg_id = "tflt_%s_%d_%d" % (uuid.uuid4().hex[:8], n, i)
            i += 1
            began = time.monotonic()
            try:
                status, _, _ = send(self.server, org, msg_id, timeout=20)
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors.append(repr(e))
                continue
            took = time.monotonic() - began
            with self.lock:
                self.slowest = max(self.slowest, took)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.ids_by_status.setdefault(status, []).append(msg_id)
                if status == 200:
                    self.ok_ids.append(msg_id)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)

    def count_ok(self):
        with self.lock:
            return len(self.ok_ids)


class FaultTest(unittest.TestCase):

    def setUp(self):
        pg("start")
        psql("DELETE FROM processed_messages WHERE message_id LIKE 'tflt_%'")

    def tearDown(self):
        pg("start")  # whatever a test did to the database, leave it up
        psql("ALTER ROLE poold RESET idle_session_timeout")
        psql("DELETE FROM processed_messages WHERE message_id LIKE 'tflt_%'")

    def assert_only_200_503(self, load):
        """200, 503, or 504 (a commit whose answer was lost: a restart
        mid-commit); every 200 has its row, no 503 has one."""
        bad = {s: n for s, n in load.statuses.items()
               if s not in (200, 503, 504)}
        self.assertEqual(bad, {}, "answers other than 200/503/504")
        self.assertEqual(load.errors, [], "requests that got no answer")
        self.assertEqual(rows_for(load.ok_ids), len(load.ok_ids),
                         "a 200 without its row")
        self.assertEqual(rows_for(load.ids_by_status.get(503, [])), 0,
                         "a 503 with a row")

    def test_restart_under_load(self):
        server = Poold(env=dict(POOLD_POOL_SIZE=2,
                                POOLD_ACQUIRE_TIMEOUT_MS=2000))
        try:
            with Load(server) as load:
                wait_for(lambda: load.count_ok() >= 20, 30, "first 200s")
                pg("restart")
                before = load.count_ok()
                wait_for(lambda: load.count_ok() >= before + 20, 30,
                           "200s after the restart")
            self.assert_only_200_503(load)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_backends_terminated(self):
        server = Poold(env=dict(POOLD_POOL_SIZE=4))
        try:
            for i in range(8):
                self.assertEqual(send(server, "org_041", "tflt_t%d" % i)[0],
                                 200)
            pids = psql("SELECT string_agg(pid::text, ',') FROM "
                        "pg_stat_activity WHERE application_name LIKE "
                        "'poold%'")
            self.assertTrue(pids)
            killed = psql("SELECT count(pg_terminate_backend(pid)) FROM "
                          "pg_stat_activity WHERE pid IN (%s)" % pids)
            self.assertGreater(int(killed), 0)
            # pg_terminate_backend only signals: wait until they exited, so
            # the next request finds its connection closed instead of
            # racing the exit (an INSERT sent to a backend that dies before
            # answering is a 504: it may have committed).
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%s)"
                % pids) == "0", 30, "the terminated backends to exit")
            statuses = [send(server, "org_041", "tflt_after%d" % i)[0]
                        for i in range(10)]
            self.assertTrue(set(statuses) <= {200, 503}, statuses)
            self.assertEqual(statuses[-5:], [200] * 5, statuses)
            ok = ["tflt_after%d" % i for i, s in enumerate(statuses)
                  if s == 200]
            self.assertEqual(rows_for(ok), len(ok))
        finally:
            self.assertEqual(server.stop(), 0)

    def test_idle_session_timeout(self):
        """The server closes poold's idle sessions by itself; the next
        request is served on a new connection, at once."""
        psql("ALTER ROLE poold SET idle_session_timeout = '500ms'")
        server = Poold(env=dict(POOLD_POOL_SIZE=1))
        try:
            # A session may also be closed between two statements of a
            # request stalled 500 ms by a loaded machine (the request gets
            # a 503/504): retry the same id and payload (safe) until a 200.
            wait_for(lambda: send(server, "org_042", "tflt_i0")[0] == 200,
                       60, "a first 200 under a 500 ms idle_session_timeout")
            # Every session of poold open now started before this instant,
            # under the timeout; the wait needs no list of pids, which a
            # session already closed would leave empty.
            mark = psql("SELECT now()")
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                " = 'poold' AND backend_start <= '%s'" % mark) == "0", 60,
                "the server to close poold's idle sessions")
            # New sessions without the timeout: the message below cannot
            # lose its own session to a stall, only the closed one counts.
            psql("ALTER ROLE poold RESET idle_session_timeout")
            status, _, body = send(server, "org_042", "tflt_i1")
            self.assertEqual(status, 200, body)
            self.assertEqual(rows_for(["tflt_i0", "tflt_i1"]), 2)
            # Not vacuous: poold found its pooled service's session closed.
            stats = server.pool("org_042")
            self.assertGreaterEqual(stats["destroyed_by"]["invalid"], 1,
                                    stats)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_an_idle_service_ends_with_its_connections_ttl(self):
        """A service built on a connection opened earlier (the warm one)
        goes when that connection reaches its TTL, idle or not: its own
        lifetime ran from the build, so it held the connection up to a
        TTL longer (built at half the TTL: until 1.4 TTLs at the
        earliest, 14 s here)."""
        ttl = 10
        server = Poold(env=dict(POOLD_POOL_SIZE=1, POOLD_DB_MIN_IDLE=1,
                                POOLD_CONN_TTL_S=ttl))
        try:
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE"
                " application_name = 'poold'") == "1", 30, "the warm one")
            pid, start = psql(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE"
                " application_name = 'poold'").split("|")
            seen = {}

            def age_open():
                """The connection's age (s) and whether it is still open,
                read in one statement."""
                age, n = psql(
                    "SELECT extract(epoch FROM now() - '%s'::timestamptz),"
                    " count(*) FILTER (WHERE pid = %s) FROM pg_stat_activity"
                    % (start, pid)).split("|")
                seen["age"] = float(age)
                return n != "0"

            # Not a synchronisation: the connection's age at the build is
            # what this sets.
            wait_for(lambda: age_open() and seen["age"] >= ttl / 2, 30,
                     "half a TTL")
            status, _, body = send(server, "org_042", "tflt_ttl")
            self.assertEqual(status, 200, body)
            wait_for(lambda: not age_open(), 3 * ttl,
                     "the warm connection to close")
            # Its TTL (jittered down), a tick of upkeep and the poll.
            self.assertLess(seen["age"], ttl + 2.5)
            self.assertGreaterEqual(
                server.pool("org_042")["destroyed_by"]["expired"], 1)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_database_down_at_start_then_up(self):
        pg("stop")
        server = Poold(wait_ready=False)
        try:
            self.assertTrue(server.alive())
            self.assertFalse(server.ready())
            started = time.monotonic()
            status, _, body = send(server, "org_043", "tflt_d0")
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertEqual(status, 503)
            self.assertEqual(body["error"]["code"], "database_unavailable")
            pg("start")
            wait_for(server.ready, 20, "readiness after the database")
            self.assertEqual(send(server, "org_043", "tflt_d1")[0], 200)
            self.assertEqual(rows_for(["tflt_d0", "tflt_d1"]), 1)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_database_down_is_not_hammered(self):
        server = Poold(env=dict(POOLD_POOL_SIZE=2))
        try:
            for i in range(10):
                self.assertEqual(send(server, 
                    "org_%03d" % (50 + i), "tflt_h%d" % i)[0], 200)
            pg("stop")
            answers = []
            lock = threading.Lock()

            def flood(n):
                for i in range(40):
                    org = "org_%03d" % (50 + (n + i) % 20)
                    t0 = time.monotonic()
                    status, _, body = send(server, 
                        org, "tflt_f%d_%d" % (n, i), timeout=10)
                    with lock:
                        answers.append((status, body["error"]["code"]
                                        if status != 200 else None,
                                        time.monotonic() - t0))
            threads = [threading.Thread(target=flood, args=(n,))
                       for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertEqual(len(answers), 320)
            self.assertEqual({(s, c) for s, c, _ in answers},
                             {(503, "database_unavailable")})
            self.assertLess(max(d for _, _, d in answers), 6.0)
            # Connection attempts back off: far fewer than requests.
            with open(server.log.name) as log:
                attempts = log.read().count("database connection failed")
            self.assertLess(attempts, 40, "connection attempts")
            pg("start")
            wait_for(server.ready, 20, "readiness after the database")
            wait_for(lambda: send(server, "org_055", "tflt_back")[0]
                       == 200, 10, "service after the database came back")
        finally:
            self.assertEqual(server.stop(), 0)

    def test_row_lock_held_elsewhere_is_bounded(self):
        # Another session inserts the same message and holds its
        # transaction open: poold's insert waits for that row lock.
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL,
             "-c", "BEGIN", "-c",
             "INSERT INTO processed_messages (org_id, message_id, passed, "
             "checks, payload_sha256) VALUES ('org_046', 'tflt_lock', true, "
             "0, '\\x00')", "-c", "SELECT pg_sleep(30)", "-c", "ROLLBACK"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=1000))
        try:
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                "'SELECT pg_sleep(30)%'") == "1", 10, "the lock holder")
            started = time.monotonic()
            status, _, body = send(server, "org_046", "tflt_lock")
            self.assertLess(time.monotonic() - started, 5.0)
            self.assertEqual(status, 503, body)
            self.assertEqual(body["error"]["code"], "database_unavailable")
            holder.terminate()
            psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE query LIKE 'SELECT pg_sleep(30)%'")
            wait_for(lambda: send(server, "org_046", "tflt_lock")[0]
                       == 200, 10, "the row once the lock is gone")
            self.assertEqual(rows_for(["tflt_lock"]), 1)
        finally:
            holder.kill()
            holder.wait()
            self.assertEqual(server.stop(), 0)

    def test_silent_database_is_bounded(self):
        """PostgreSQL stopped (SIGSTOP) with its connections open: every
        answer within acquire + statement + 1 s (and 1 s of slack for a
        loaded machine), only 200/503/504, no 503 with a row; after SIGCONT
        poold serves again and no backend of it is left stuck."""
        server = Poold(env=dict(POOLD_POOL_SIZE=2,
                                POOLD_ACQUIRE_TIMEOUT_MS=1000,
                                POOLD_STATEMENT_TIMEOUT_MS=1000))
        try:
            with Load(server, threads=8) as load:
                wait_for(lambda: load.count_ok() >= 20, 30, "first 200s")
                try:
                    pg_signal(signal.SIGSTOP)
                    silent_from = load.count_ok()
                    time.sleep(6)  # the outage being tested, not a sync
                    during = dict(load.statuses)
                finally:
                    pg_signal(signal.SIGCONT)
                before = load.count_ok()
                wait_for(lambda: load.count_ok() >= before + 20, 30,
                           "200s after SIGCONT")
            self.assertLessEqual(load.slowest, 4.0, "an answer took longer")
            self.assertTrue(during.get(503, 0) + during.get(504, 0) > 0
                            or load.count_ok() == silent_from,
                            "the outage was not seen")
            self.assert_only_200_503(load)
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                " LIKE 'poold%' AND state = 'active'"
                " AND query_start < now() - interval '3 seconds'") == "0",
                15, "no stuck poold backend")
        finally:
            pg_signal(signal.SIGCONT)
            self.assertEqual(server.stop(), 0)

    def test_lock_without_statement_timeout_is_bounded(self):
        """POOLD_STATEMENT_TIMEOUT_MS=0: the server would wait for the lock
        for ever; poold answers 504 (the insert was sent) within the acquire
        timeout + 1 s and closes that connection."""
        holder = hold_row_lock("org_046", "tflt_lock0")
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=0,
                                POOLD_ACQUIRE_TIMEOUT_MS=1000))
        try:
            started = time.monotonic()
            status, _, body = send(server, "org_046", "tflt_lock0")
            self.assertLess(time.monotonic() - started, 3.0)
            self.assertEqual(status, 504, body)
            self.assertEqual(body["error"]["code"], "commit_unknown")
            release_row_lock(holder)
            wait_for(lambda: send(server, "org_046", "tflt_lock0")[0]
                       == 200, 10, "the row once the lock is gone")
            self.assertEqual(rows_for(["tflt_lock0"]), 1)
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                " LIKE 'poold%' AND wait_event_type = 'Lock'") == "0",
                10, "the abandoned backend to go")
        finally:
            release_row_lock(holder)
            server.stop()

    def test_admin_call_without_statement_timeout_is_bounded(self):
        """POOLD_STATEMENT_TIMEOUT_MS=0: an admin call that waited for a
        connection and then waits on a locked row is answered within
        acquire + 1 s (DESIGN.md), as a request's commit is. Its
        statements once had the acquire timeout again after the acquire's
        deadline (6 s here)."""
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL,
             "-c", "BEGIN", "-c",
             "SELECT 1 FROM orgs WHERE org_id = 'org_048' FOR UPDATE",
             "-c", "SELECT pg_sleep(31)", "-c", "ROLLBACK"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # One connection, held for 1.5 s by a request's service.
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=0,
                                POOLD_ACQUIRE_TIMEOUT_MS=3000,
                                POOLD_DB_MAX_CONNS=1, POOLD_DB_MIN_IDLE=0,
                                POOLD_PROCESS_COST_MS=1500))
        busy = {}
        t = threading.Thread(target=lambda: busy.update(
            r=send(server, "org_049", "tflt_busy_" + uuid.uuid4().hex[:8])))
        try:
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                "'SELECT pg_sleep(31)%'") == "1", 10, "the lock holder")
            t.start()
            wait_for(lambda: server.pool("org_049")["active"] == 1, 10,
                     "the request to hold the connection")
            started = time.monotonic()
            r = server.request("PUT", "/pools/org_048/size",
                               body={"max_size": 3}, token=TOKEN,
                               route="/pools/{org_id}/size")
            took = time.monotonic() - started
            self.assertEqual((r.status, r.code),
                             (503, "database_unavailable"), r.body)
            # About 3.5 s; the bound is 4 s; the old code took 5.0 s.
            self.assertLess(took, 4.5, "answered after %.2f s" % took)
            t.join(10)
            self.assertEqual(busy["r"][0], 200, busy)
        finally:
            release_row_lock(holder, seconds=31)
            server.stop()

    def test_broken_connection_after_insert_is_retried(self):
        """The connection breaks after poold's INSERT went out (its backend
        is terminated while the INSERT waits for a row lock): the outcome
        is unknown, so poold sends it once more on another connection,
        which finds the row the lock's holder committed with the same
        payload: 200, duplicate (DESIGN.md), one row, and the log says."""
        org, msg_id, payload = "org_047", "tflt_retry", "abcdef01"
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True)
        waiting = ("SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
                   " WHERE application_name LIKE 'poold%' AND"
                   " wait_event_type = 'Lock'")
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=20000))
        try:
            holder.stdin.write(
                "BEGIN;\nINSERT INTO processed_messages (org_id, message_id,"
                " passed, checks, payload_sha256) VALUES ('%s', '%s', true,"
                " 7, sha256('%s'::bytea));\n" % (org, msg_id, payload))
            holder.stdin.flush()
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
                " USING (pid) WHERE a.state = 'idle in transaction' AND"
                " l.relation = 'processed_messages'::regclass") != "0",
                10, "the lock holder's insert")
            answer = {}
            post = threading.Thread(target=lambda: answer.update(
                r=send(server, org, msg_id, payload)))
            post.start()
            wait_for(lambda: psql(waiting), 10, "poold's insert to wait")
            first = psql(waiting)
            psql("SELECT pg_terminate_backend(%s)" % first)
            wait_for(lambda: psql(waiting) not in ("", first), 10,
                       "the retry to wait on another connection")
            holder.stdin.write("COMMIT;\n")
            holder.stdin.close()
            post.join(30)
            self.assertFalse(post.is_alive())
            status, _, body = answer["r"]
            self.assertEqual(status, 200, body)
            self.assertTrue(body["duplicate"], body)
            self.assertEqual(body["details"]["checks"], 7, body)
            self.assertEqual(rows_for([msg_id]), 1)
            self.assertIn("retried on another connection", server.logtext())
        finally:
            holder.kill()
            holder.wait()
            self.assertEqual(server.stop(), 0)

    def test_shutdown_aborts_calls_the_drain_left(self):
        """A request waiting on the database past the 10 s drain is cut
        (504: its insert was sent) and poold exits 0 soon after."""
        holder = hold_row_lock("org_046", "tflt_lock1", seconds=60)
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=0,
                                POOLD_ACQUIRE_TIMEOUT_MS=60000))
        answer = {}

        def post():
            answer["r"] = send(server, "org_046", "tflt_lock1", timeout=60)

        t = threading.Thread(target=post)
        try:
            t.start()
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                " = 'poold' AND wait_event_type = 'Lock'") == "1", 10,
                "the request to wait on the lock")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=30)
            self.assertEqual(code, 0)
            self.assertLess(time.monotonic() - started, 10 + 5)
            t.join(10)
            self.assertEqual(answer["r"][0], 504, answer)
        finally:
            release_row_lock(holder, seconds=60)
            server.stop()
        self.assertIn("in-flight database calls aborted", server.output)

    def test_second_signal_exits_at_once(self):
        holder = hold_row_lock("org_046", "tflt_lock2", seconds=60)
        # _exit(1) leaves threads unjoined by design: under TSan that is a
        # "thread leak" report, whose exit code (66) would hide ours.
        tsan = (os.environ.get("TSAN_OPTIONS", "") +
                " report_thread_leaks=0").strip()
        server = Poold(env=dict(POOLD_STATEMENT_TIMEOUT_MS=0,
                                POOLD_ACQUIRE_TIMEOUT_MS=60000,
                                TSAN_OPTIONS=tsan))
        t = threading.Thread(target=lambda: self.swallow(
            send, server, "org_046", "tflt_lock2", timeout=60))
        try:
            t.start()
            wait_for(lambda: psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                " = 'poold' AND wait_event_type = 'Lock'") == "1", 10,
                "the request to wait on the lock")
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "shutting down" in server.logtext(), 10,
                       "the drain to begin")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=10)
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertEqual(code, 1, server.logtext()[-3000:])
        finally:
            release_row_lock(holder, seconds=60)
            server.stop()
            t.join(10)
        self.assertIn("second signal", server.output)

    @staticmethod
    def swallow(fn, *args, **kw):
        try:
            fn(*args, **kw)
        except (OSError, http.client.HTTPException):
            pass

    def test_idle_clients_do_not_starve_others(self):
        server = Poold(env=dict(POOLD_MAX_CLIENTS=64,
                                POOLD_CLIENT_TIMEOUT_S=2))
        idle = []
        try:
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", server.port))
                idle.append(s)
            slow = socket.create_connection(("127.0.0.1", server.port))
            slow.sendall(b"POST /process HTTP/1.1\r\nHost: x\r\n")
            idle.append(slow)
            for i in range(10):
                self.assertEqual(
                    send(server, "org_044", "tflt_c%d" % i)[0], 200)
            # Idle connections are closed by the server's client timeout.
            for s in idle:
                s.settimeout(10)
                self.assertEqual(s.recv(1024), b"")
        finally:
            for s in idle:
                s.close()
            self.assertEqual(server.stop(), 0)

    @staticmethod
    def answered(port, first=b""):
        """A keep-alive connection that sent first and a GET /healthz and
        read the whole answer."""
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(first + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b'"ok"}' not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise AssertionError("closed before the answer")
            got += chunk
        return s

    @staticmethod
    def is_open(s):
        s.setblocking(False)
        try:
            return bool(s.recv(1))  # nothing may come: only an EOF would
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        finally:
            s.settimeout(10)

    def test_idle_keep_alive_clients_give_way(self):
        # Every slot is held by a keep-alive connection that was answered
        # and sends nothing, below the client timeout: an attacker can
        # keep that up with a request per connection now and then. The
        # waiting client must not wait for a timeout.
        server = Poold(env=dict(POOLD_MAX_CLIENTS=8,
                                POOLD_CLIENT_TIMEOUT_S=60,
                                POOLD_REQUEST_READ_TIMEOUT_S=10))
        held = []
        try:
            # The first answered, so the longest idle: but it has begun
            # its next request (bytes in, no request line yet).
            busy = self.answered(server.port)
            held.append(busy)
            busy.sendall(b"GET /hea")
            idle = [self.answered(server.port) for _ in range(7)]
            held += idle
            started = time.monotonic()
            status = send(server, "org_044", "tflt_idle0", timeout=8)[0]
            self.assertEqual(status, 200)
            self.assertLess(time.monotonic() - started, 5.0)
            # An idle one gave its slot (the longest idle by the server's
            # clock, which takes an answer's time when its completion runs:
            # on a loaded machine idle[1] may complete before idle[0]);
            # one only, and not the one mid-request.
            wait_for(lambda: not all(self.is_open(s) for s in idle), 5,
                     "an idle connection to be closed")
            self.assertEqual(sum(not self.is_open(s) for s in idle), 1)
            self.assertTrue(self.is_open(busy))
            busy.sendall(b"lthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b'"ok"}' not in got:
                chunk = busy.recv(4096)
                self.assertTrue(chunk, "the busy connection was closed")
                got += chunk
            metrics = server.get("/metrics", token=TOKEN).body.decode()
            m = re.search(r"^poold_http_idle_connections_closed_total (\d+)$",
                          metrics, re.M)
            self.assertIsNotNone(m, "no idle-closed counter in /metrics")
            self.assertGreaterEqual(int(m.group(1)), 1)
        finally:
            for s in held:
                s.close()
            self.assertEqual(server.stop(), 0)
        self.assertIn("idle connections closed", server.output)

    def test_more_connections_than_the_limit(self):
        server = Poold(env=dict(POOLD_MAX_CLIENTS=8,
                                POOLD_CLIENT_TIMEOUT_S=30))
        held = []
        try:
            for _ in range(20):
                try:
                    held.append(socket.create_connection(
                        ("127.0.0.1", server.port), timeout=2))
                except OSError:
                    pass
            self.assertIsNone(server.proc.poll())
            for s in held:
                s.close()
            held = []
            # Once they are gone the server serves again.
            wait_for(lambda: server.alive(), 20, "service after the flood")
            self.assertEqual(send(server, "org_045", "tflt_l0")[0], 200)
        finally:
            for s in held:
                s.close()
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
