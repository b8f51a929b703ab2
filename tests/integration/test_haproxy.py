"""test_haproxy.py — three poold replicas behind Debian's HAProxy, running
the repository's own docker/haproxy/haproxy.cfg on loopback.

Load goes through HAProxy; one replica is SIGKILLed mid-load and another
drains (SIGTERM). Clients may see only 200, 503 and 504, and a connection
HAProxy closed without an answer because the replica it was forwarding to
was the SIGKILLed one (its log says so); retrying the same id and payload
through the proxy succeeds; every 200 has its row; and pg_stat_activity
(sampled every 50 ms) never shows more than the budget plus one
housekeeping connection per replica.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

from harness import (SOURCE_DIR, Poold, ReplicaLoad, Sampler, free_port,
                     private_tempdir, psql, remove_private_tempdir,
                     require_env, settled, start_replica, stop_if_running,
                     wait_for)

LOG_DIR = private_tempdir("poold-haproxy-")

P = "tx" + uuid.uuid4().hex[:8] + "_"
ORGS = [P + "o%d" % i for i in range(4)]
CFG_DIR = os.path.join(SOURCE_DIR, "docker", "haproxy")


class Endpoint(Poold):
    """The proxy's address, spoken to like a poold."""

    def __init__(self, port):  # pylint: disable=super-init-not-called
        self.port = port


class Haproxy:
    def __init__(self, replicas):
        self.port = free_port()
        env = dict(os.environ)
        env.update({"POOLD_HAPROXY_BIND": "127.0.0.1:%d" % self.port,
                    "POOLD_HAPROXY_DIR": CFG_DIR})
        for i, p in enumerate(replicas):
            env["POOLD_%d" % (i + 1)] = "127.0.0.1:%d" % p.port
        self.log = tempfile.NamedTemporaryFile(prefix="haproxy-test-",
                                               suffix=".log", delete=False)
        cfg = os.path.join(CFG_DIR, "haproxy.cfg")
        check = subprocess.run(["haproxy", "-c", "-f", cfg], env=env,
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], env=env,
                                     stdout=self.log, stderr=self.log)
        self.endpoint = Endpoint(self.port)

    # option httplog: client address, accept date, backend/server, timers,
    # status, bytes, cookies, termination state
    LOG_LINE = re.compile(r"127\.0\.0\.1:(\d+) \[([^\]]+)\] \S+ \S+/(\S+) "
                          r"\S+ (-?\d+) \d+ \S+ \S+ (\S{4}) ")

    @classmethod
    def sessions(cls, log):
        """Of log (logtext()): {client port: [(accept time.time(), server,
        status, state)]}"""
        out = {}
        for m in cls.LOG_LINE.finditer(log):
            t = datetime.datetime.strptime(m.group(2),
                                           "%d/%b/%Y:%H:%M:%S.%f").timestamp()
            out.setdefault(int(m.group(1)), []).append(
                (t, m.group(3), int(m.group(4)), m.group(5)))
        return out

    def logtext(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.unlink(self.log.name)


def up(ep):
    try:
        return ep.get("/readyz").status == 200
    except OSError:
        return False


def setUpModule():
    require_env()
    if shutil.which("haproxy") is None:
        raise unittest.SkipTest("haproxy is not installed "
                                "(scripts/install-deps.sh)")
    psql("INSERT INTO orgs (org_id, config) VALUES " +
            ",".join("('%s', '{\"rules\":[]}')" % o for o in ORGS))


def tearDownModule():
    remove_private_tempdir(LOG_DIR)
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
            f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


class BehindHaproxy(unittest.TestCase):
    def test_sigkill_mid_load(self):
        sampler = Sampler()
        sampler.start()
        procs, proxy, proxy_log, sessions = [], None, "", {}
        killed_at = None
        load = ReplicaLoad(ORGS, threads=8, retry=30)
        try:
            for _ in range(3):
                sampler.running += 1
                procs.append(start_replica())
                self.addCleanup(stop_if_running, procs[-1])
            for p in procs:
                wait_for(lambda: settled(p, 3), 15, "three replicas")
            proxy = Haproxy(procs)
            self.addCleanup(proxy.stop)
            ep = proxy.endpoint
            wait_for(lambda: up(ep), 10, "the proxy to answer")
            load.set_targets([ep])
            load.start()
            wait_for(lambda: len(load.results) > 200, 30, "load to run")

            # SIGKILL one replica mid-load
            self.assertIsNone(procs[0].proc.poll(), "poold-1 died on its own")
            killed_at = time.time()
            procs[0].kill()
            n = len(load.results)
            wait_for(lambda: len(load.results) > n + 300, 30,
                        "load to go on through the others")
            # the survivors take its share once its lease expires
            for p in procs[1:]:
                wait_for(lambda: settled(p, 2), 12,
                            "the survivors to take the dead one's share")
            sampler.running -= 1

            # a draining replica leaves the rotation: no client sees it go
            self.assertEqual(procs[1].stop(), 0)
            n = len(load.results)
            wait_for(lambda: len(load.results) > n + 300, 30,
                        "load to go on through the last replica")
            sampler.running -= 1
        finally:
            load.stop()
            sampler.stop()
            if proxy is not None:
                proxy_log = proxy.logtext()
                sessions = Haproxy.sessions(proxy_log)
        sampler.check(self)
        statuses = {}
        for _, _, s in load.results:
            statuses[s] = statuses.get(s, 0) + 1
        print("statuses seen through haproxy:", statuses, file=sys.stderr)
        self.assertLessEqual(set(statuses) - {200, 503, 504, "conn"}, set(),
                             proxy_log[-4000:])
        # A connection closed without an answer. When the replica a request
        # went to is SIGKILLed under it, HAProxy 2.6 answers its 502 (our
        # 504 file) or, now and then, closes the client's connection with
        # nothing (logged: status -1, termination state S*, "the server
        # aborted"). For the client both mean the same: maybe written,
        # retry the same id and payload (the retries are checked below).
        # A cut anywhere else (the draining replica, a live one, the proxy
        # on its own) is a client cut off: a failure.
        for began, t, port, mid, err in load.cut:
            # this connection's line: accepted between its connect and its
            # error (a second of slack each side; a port may be reused)
            mine = [x for x in sessions.get(port, [])
                    if began - 1 <= x[0] <= t + 1]
            last = max(mine, default=None)
            print("cut off: %s (%s) on client port %s; haproxy: %s"
                  % (mid, err, port, last), file=sys.stderr)
            # in flight at the kill: accepted before it, cut after it
            self.assertTrue(killed_at is not None and t >= killed_at and
                            last is not None and last[0] <= killed_at + 0.5
                            and last[1] == "poold-1" and last[2] == -1
                            and last[3].startswith("S"),
                            "%s: %s, not by the killed replica in flight at "
                            "its kill (killed at %s; haproxy: %s)"
                            % (mid, err, killed_at, last))
        # every message was answered 200 in the end, by retrying
        self.assertEqual({m: s for m, s in load.final.items() if s != 200},
                         {})
        ok = {m for _, m, s in load.results if s == 200}
        got = set(psql("SELECT message_id FROM processed_messages WHERE "
                          f"org_id LIKE '{P}%'").split())
        self.assertEqual(ok - got, set(), "a 200 without its row")
        self.assertGreater(len(ok), 600)


if __name__ == "__main__":
    unittest.main()
