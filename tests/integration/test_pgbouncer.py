"""test_pgbouncer.py — poold through Debian's PgBouncer (1.18) in session and
transaction pooling mode: what works, and which settings each needs.

- poold sends its statement timeouts as the startup parameter `options`;
  PgBouncer refuses unknown startup parameters, so it needs
  `ignore_startup_parameters = options` (in both modes); the timeouts then
  come from the server (e.g. ALTER ROLE ... SET statement_timeout).
- Transaction mode: unnamed statements (PQexecParams) work; named prepared
  statements do not with 1.18, so POOLD_PREPARED_STATEMENTS=off there.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
import uuid

from harness import (TOKEN, Poold, free_port, private_tempdir, psql,
                     remove_private_tempdir, require_env, stop_if_running,
                     wait_for)

LOG_DIR = private_tempdir("poold-pgbouncer-")

P = "tb" + uuid.uuid4().hex[:8] + "_"
ORG = P + "org"
PG_PORT = os.environ.get("POOLD_TEST_PG_PORT", "")
SERVER_POOL = 3  # transaction mode: server connections per (db, user)
SESSION_POOL = 10  # session mode: one per poold connection (8 + 1)


class Pgbouncer:
    def __init__(self, mode, ignore="options", pool=None):
        if pool is None:
            pool = SESSION_POOL if mode == "session" else SERVER_POOL
        self.port = free_port()
        # in /tmp itself: it runs as postgres, who cannot enter our dirs
        self.dir = tempfile.mkdtemp(prefix="pgbouncer-test-", dir="/tmp")
        os.chmod(self.dir, 0o777)  # it runs as postgres when we are root
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "users.txt")
        with open(users, "w", encoding="utf-8") as f:
            f.write('"poold" ""\n"postgres" ""\n')
        with open(ini, "w", encoding="utf-8") as f:
            f.write(f"""[databases]
pools = host=127.0.0.1 port={PG_PORT} dbname=pools

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = {mode}
default_pool_size = {pool}
max_client_conn = 200
ignore_startup_parameters = {ignore}
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        for p in (ini, users):
            os.chmod(p, 0o644)
        cmd = ["pgbouncer", ini]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._listening, 10, "pgbouncer to listen")
        self.url = "postgresql://poold@127.0.0.1:%d/pools" % self.port

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("pgbouncer exited: " + self.logtext())
        r = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p",
                            str(self.port)], check=False)
        return r.returncode == 0

    def logtext(self):
        try:
            with open(os.path.join(self.dir, "pgbouncer.log"),
                      encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    require_env("POOLD_TEST_PG_PORT")
    if shutil.which("pgbouncer") is None:
        raise unittest.SkipTest("pgbouncer is not installed "
                                "(scripts/install-deps.sh)")
    psql(f"INSERT INTO orgs (org_id, config) VALUES ('{ORG}', "
            "'{\"rules\":[{\"type\":\"max_payload_bytes\",\"value\":8}]}')")


def tearDownModule():
    remove_private_tempdir(LOG_DIR)
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
            f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


def server_backends():
    """PostgreSQL backends of the role poold (all of them PgBouncer's)."""
    return int(psql("SELECT count(*) FROM pg_stat_activity "
                       "WHERE usename = 'poold'"))


class ThroughPgbouncer(unittest.TestCase):
    def bouncer(self, mode, **kw):
        b = Pgbouncer(mode, **kw)
        self.addCleanup(b.stop)
        return b

    def poold(self, url, wait_ready=True, **env):
        e = {"DATABASE_URL": url, "POOLD_CLIENT_AUTH": "none",
             "POOLD_DB_MAX_CONNS": "8", "POOLD_POOL_SIZE": "8"}
        e.update(env)
        p = Poold(env=e, wait_ready=wait_ready)
        self.addCleanup(stop_if_running, p)
        return p

    def exercise(self, p, threads=8, per_thread=40):
        """Concurrent messages, duplicates, a conflict, a rule change."""
        statuses, lock = [], threading.Lock()

        def worker(k):
            for i in range(per_thread):
                mid = "%s%d_%d" % (P, k, i)
                r = p.process({"id": mid, "org_id": ORG, "payload": "ab"})
                with lock:
                    statuses.append((mid, r.status))
        ts = [threading.Thread(target=worker, args=(k,))
              for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual({s for _, s in statuses}, {200})
        ids = {m for m, _ in statuses}
        got = set(psql("SELECT message_id FROM processed_messages WHERE "
                          f"org_id = '{ORG}'").split())
        self.assertEqual(ids - got, set())
        mid = P + uuid.uuid4().hex[:8]
        r = p.process({"id": mid, "org_id": ORG, "payload": "ab"})
        self.assertEqual((r.status, r.json()["duplicate"]), (200, False))
        r = p.process({"id": mid, "org_id": ORG, "payload": "ab"})
        self.assertEqual((r.status, r.json()["duplicate"]), (200, True))
        r = p.process({"id": mid, "org_id": ORG, "payload": "cd"})
        self.assertEqual(r.status, 409)
        # housekeeping through the bouncer: a config change arrives
        psql("UPDATE orgs SET config = '{\"rules\":[{\"type\":"
                "\"max_payload_bytes\",\"value\":1}]}' "
                f"WHERE org_id = '{ORG}'")
        try:
            wait_for(lambda: not p.process(
                {"id": P + uuid.uuid4().hex[:8], "org_id": ORG,
                 "payload": "ab"}).json()["passed"], 5, "the new rules")
        finally:
            psql("UPDATE orgs SET config = '{\"rules\":[{\"type\":"
                    "\"max_payload_bytes\",\"value\":8}]}' "
                    f"WHERE org_id = '{ORG}'")

    def test_startup_options_need_ignore_startup_parameters(self):
        b = self.bouncer("session", ignore="extra_float_digits")
        p = self.poold(b.url, wait_ready=False)
        wait_for(lambda: "unsupported startup parameter" in p.logtext(),
                    10, "poold to log PgBouncer's refusal")
        self.assertIn("options", p.logtext())
        self.assertEqual(p.get("/readyz").status, 503)

    def test_without_timeouts_no_setting_is_needed(self):
        b = self.bouncer("transaction", ignore="extra_float_digits")
        p = self.poold(b.url, POOLD_STATEMENT_TIMEOUT_MS="0",
                       POOLD_PREPARED_STATEMENTS="off")
        r = p.process({"id": P + uuid.uuid4().hex[:8], "org_id": ORG,
                       "payload": "ab"})
        self.assertEqual(r.status, 200, r.body)

    def test_session_mode(self):
        b = self.bouncer("session")
        p = self.poold(b.url)
        self.exercise(p)
        # session mode: one server connection per poold connection
        self.assertLessEqual(server_backends(), SESSION_POOL)

    def test_transaction_mode(self):
        b = self.bouncer("transaction")
        p = self.poold(b.url, POOLD_PREPARED_STATEMENTS="off")
        self.exercise(p)
        st = p.get("/stats", token=TOKEN).json()["connections"]
        # poold held more connections to PgBouncer than PgBouncer held to
        # PostgreSQL: transactions shared the server connections
        print("transaction mode: poold opened %d connections to PgBouncer,"
              " PostgreSQL saw %d backends" % (st["created"],
                                               server_backends()),
              file=sys.stderr)
        self.assertGreater(st["peak_active"], SERVER_POOL)
        self.assertLessEqual(server_backends(), SERVER_POOL)


if __name__ == "__main__":
    unittest.main()
