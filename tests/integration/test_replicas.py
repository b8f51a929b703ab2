"""test_replicas.py — several poold processes sharing one connection budget
(POOLD_CLUSTER_MAX_CONNS, DESIGN.md "Replicas") against the test PostgreSQL.

Real processes on loopback; pg_stat_activity is sampled every 50 ms by one
psql session while load runs and replicas join, die (SIGKILL) and stop.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_http as th  # noqa: E402  (Poold, psql, wait_for, the spec)

# Logs of the many processes these tests start go to a directory of their
# own (other test runs on the machine clean up /tmp/poold-test-* by name).
LOG_DIR = tempfile.mkdtemp(prefix="poold-replicas-")
tempfile.tempdir = LOG_DIR

P = "tr" + uuid.uuid4().hex[:8] + "_"
ORGS = [P + "o%d" % i for i in range(4)]
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
    return th.Poold(env=replica_env(**extra), wait_ready=False)


def cluster(p):
    r = p.get("/cluster", token=th.TOKEN, route="/cluster")
    assert r.status == 200, r.body
    return r.json()["replicas"]


def me(p):
    return [r for r in cluster(p) if r.get("self")]


def settled(p, n):
    """True when p sees n live replicas whose shares add up to the budget
    and it holds its whole share (up to its local maximum)."""
    view = cluster(p)
    mine = [r for r in view if r.get("self")]
    return (len(view) == n and sum(r["share"] for r in view) == BUDGET
            and len(mine) == 1
            and mine[0]["granted"] == min(mine[0]["share"], LOCAL_MAX))


def stop_if_running(p):
    """SIGTERM and a clean exit (a sanitizer's report makes it non-zero)."""
    if p.proc.poll() is None:
        code = p.stop()
        assert code == 0, "poold exited %s" % code


def kill(p):
    """SIGKILL: no drain, no goodbye; the lease has to expire."""
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(10)
    try:
        os.unlink(p.log.name)
    except OSError:
        pass


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
        self.psql = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-F", " ", "-d", th.ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)

    def run(self):
        while not self.stop_event.is_set():
            running_before = self.running
            self.psql.stdin.write(self.SQL)
            self.psql.stdin.flush()
            total, hk = map(int, self.psql.stdout.readline().split())
            self.samples.append((time.monotonic(), total, hk,
                                 max(running_before, self.running)))
            self.stop_event.wait(0.05)

    def stop(self):
        self.stop_event.set()
        self.join(10)
        self.psql.stdin.close()
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


class Load:
    """Threads posting unique messages to the live replicas in turn. With
    retry, a message answered 503/504 or cut off is sent again (same id and
    payload) until it is answered 200 or retry seconds have passed."""

    def __init__(self, threads=8, orgs=None, retry=0):
        self.orgs = orgs or ORGS
        self.retry = retry
        self.final = {}  # message id -> last status, with retry
        self.targets = []
        self.lock = threading.Lock()
        self.results = []  # (org, id, status or "conn")
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

    @staticmethod
    def send(p, org, mid):
        try:
            # No schema check: through a proxy, 503/504 may be its own.
            return p.request("POST", "/process", timeout=15, body={
                "id": mid, "org_id": org, "payload": "ab"}).status
        except OSError:
            return "conn"  # the replica died under it

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            if t.ident is not None:
                t.join(30)


def setUpModule():
    for name in ("POOLD_BIN", "DATABASE_URL", "POOLD_TEST_ADMIN_URL"):
        if not os.environ.get(name):
            raise unittest.SkipTest(name + " is not set")
    rules = json.dumps({"rules": [{"type": "max_payload_bytes",
                                   "value": 1024}]})
    th.psql("INSERT INTO orgs (org_id, config) VALUES " +
            ",".join("('%s', '%s')" % (o, rules) for o in ORGS))


def tearDownModule():
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    th.psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
            f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


class Replicas(unittest.TestCase):
    def start(self, **extra):
        p = start_replica(**extra)
        self.addCleanup(stop_if_running, p)
        return p

    def test_budget_holds_while_replicas_join_die_and_leave(self):
        sampler = Sampler()
        sampler.start()
        load = Load()
        try:
            a = self.start()
            sampler.running = 1
            th.wait_for(lambda: settled(a, 1), 10, "a alone holds 6 of 9")
            load.set_targets([a])
            load.start()
            live = [a]
            for name in ("b", "c"):
                sampler.running += 1
                t0 = time.monotonic()
                p = self.start()
                # a new replica gets its fair share within 5 s
                th.wait_for(lambda: settled(p, len(live) + 1), 5,
                            name + " to get its share")
                joined = time.monotonic() - t0
                live.append(p)
                load.set_targets(live)
                print("replica %s: its share %s after %.2f s"
                      % (name, me(p)[0]["share"], joined), file=sys.stderr)
            for p in live:
                th.wait_for(lambda: settled(p, 3), 5, "every view to settle")
                self.assertEqual(sum(r["share"] for r in cluster(p)), BUDGET)
            time.sleep(1)  # load on three replicas; the sampler watches

            # SIGKILL one mid-load: its share is back within 10 s
            victim = live.pop(0)
            load.set_targets(live)
            dead_id = me(victim)[0]["id"]
            t0 = time.monotonic()
            kill(victim)
            for p in live:
                th.wait_for(lambda: all(r["id"] != dead_id
                                        for r in cluster(p)), 10 + 0.5,
                            "the dead replica's lease to expire")
            for p in live:
                th.wait_for(lambda: settled(p, 2), 3,
                            "the survivors to take its share")
            print("share of a SIGKILLed replica redistributed after %.2f s"
                  % (time.monotonic() - t0), file=sys.stderr)
            sampler.running -= 1

            # a fourth joins under load
            sampler.running += 1
            d = self.start()
            th.wait_for(lambda: settled(d, 3), 5, "d to get its share")
            live.append(d)
            load.set_targets(live)
            time.sleep(1)

            # a clean stop gives the share back at once (no lease wait)
            leaving = live.pop(0)
            load.set_targets(live)
            self.assertEqual(leaving.stop(), 0)
            sampler.running -= 1
            for p in live:
                th.wait_for(lambda: settled(p, 2), 4,
                            "the share of a stopped replica to be taken")
        finally:
            load.stop()
            sampler.stop()
        sampler.check(self)
        statuses = {}
        for _, _, s in load.results:
            statuses[s] = statuses.get(s, 0) + 1
        print("statuses:", statuses, "samples:", len(sampler.samples),
              "max poold connections seen:",
              max(s[1] for s in sampler.samples), file=sys.stderr)
        self.assertGreater(statuses.get(200, 0), 100)
        self.assertLessEqual(set(statuses) - {200, 503, "conn"}, set())
        ok = [m for _, m, s in load.results if s == 200]
        got = set(th.psql("SELECT message_id FROM processed_messages WHERE "
                          f"org_id LIKE '{P}%'").split())
        self.assertEqual(set(ok) - got, set(), "a 200 without its row")

    def test_standalone_is_this_process_alone(self):
        p = th.Poold(env={"POOLD_CLIENT_AUTH": "none",
                          "POOLD_DB_MAX_CONNS": "7"})
        self.addCleanup(stop_if_running, p)
        r = p.get("/cluster", route="/cluster")
        self.assertEqual(r.status, 401)
        view = cluster(p)
        self.assertEqual(len(view), 1)
        self.assertEqual((view[0]["share"], view[0]["self"]), (7, True))
        # it is in no lease table
        self.assertEqual(th.psql("SELECT count(*) FROM cluster_replicas "
                                 "WHERE replica_id = '%s'" % view[0]["id"]),
                         "0")

    def test_the_smallest_configured_budget_is_in_force(self):
        a = self.start()
        th.wait_for(lambda: settled(a, 1), 10, "a alone")
        b = self.start(POOLD_CLUSTER_MAX_CONNS=5)

        def shares(p, want):
            view = cluster(p)
            mine = [r for r in view if r["self"]][0]
            return (len(view) == 2 and sum(r["share"] for r in view) == want
                    and mine["granted"] == mine["share"])
        for p in (a, b):
            th.wait_for(lambda: shares(p, 5), 5, "the budget of 5 on both")
        self.assertEqual(b.stop(), 0)
        th.wait_for(lambda: settled(a, 1), 5, "a's own budget again")

    def test_changes_reach_every_replica(self):
        ps = [self.start() for _ in range(3)]
        for p in ps:
            th.wait_for(lambda: settled(p, 3), 10, "three replicas")
        org = ORGS[0]
        # a resize on one replica: every replica within 5 s
        r = ps[0].request("PUT", "/pools/%s/size" % org, body={"max_size": 3},
                          token=th.TOKEN, route="/pools/{org_id}/size")
        self.assertEqual(r.status, 200, r.body)
        t0 = time.monotonic()
        for p in ps[1:]:
            th.wait_for(lambda: p.pool(org)["max_size"] == 3, 5,
                        "the resize to reach every replica")
        # a configuration change in the database: every replica within 5 s
        for p in ps:
            r = p.process({"id": P + uuid.uuid4().hex[:12], "org_id": org,
                           "payload": "abcd"})
            self.assertEqual((r.status, r.json()["passed"]), (200, True))
        th.psql("UPDATE orgs SET config = '{\"rules\":[{\"type\":"
                "\"max_payload_bytes\",\"value\":2}]}' "
                f"WHERE org_id = '{org}'")
        t0 = time.monotonic()

        def fails(p):
            r = p.process({"id": P + uuid.uuid4().hex[:12], "org_id": org,
                           "payload": "abcd"})
            return r.status == 200 and not r.json()["passed"]
        for p in ps:
            th.wait_for(lambda: fails(p), 5, "the new rules on every replica")
        # and the old rules never come back
        for p in ps:
            self.assertTrue(fails(p))
        print("config change on all replicas after %.2f s"
              % (time.monotonic() - t0), file=sys.stderr)
        # a deletion (the row gone): unknown on every replica within 5 s
        gone = P + "gone"
        th.psql(f"INSERT INTO orgs (org_id, config) VALUES ('{gone}', "
                "'{\"rules\":[]}')")
        for p in ps:
            th.wait_for(lambda: p.process({"id": P + uuid.uuid4().hex[:12],
                                           "org_id": gone,
                                           "payload": "ab"}).status == 200,
                        5, "the new org on every replica")
        th.psql(f"DELETE FROM processed_messages WHERE org_id = '{gone}';"
                f"DELETE FROM orgs WHERE org_id = '{gone}'")
        for p in ps:
            th.wait_for(lambda: p.process({"id": P + uuid.uuid4().hex[:12],
                                           "org_id": gone,
                                           "payload": "ab"}).status == 404,
                        5, "the deletion to reach every replica")
        th.psql("UPDATE orgs SET pool_max_size = NULL, config = "
                "'{\"rules\":[{\"type\":\"max_payload_bytes\","
                f"\"value\":1024}}]}}' WHERE org_id = '{org}'")


if __name__ == "__main__":
    unittest.main()
