"""test_replicas.py — several poold processes sharing one connection budget
(POOLD_CLUSTER_MAX_CONNS, DESIGN.md "Replicas") against the test PostgreSQL.

Real processes on loopback; pg_stat_activity is sampled every 50 ms by one
psql session while load runs and replicas join, die (SIGKILL) and stop.
"""
import json
import sys
import time
import unittest
import uuid

from harness import (BUDGET, TOKEN, Poold, ReplicaLoad, Sampler, cluster,
                     private_tempdir, psql, remove_private_tempdir,
                     require_env, settled, start_replica, stop_if_running,
                     wait_for)

# Logs of the many processes these tests start go to a directory of their
# own.
LOG_DIR = private_tempdir("poold-replicas-")

P = "tr" + uuid.uuid4().hex[:8] + "_"
ORGS = [P + "o%d" % i for i in range(4)]


def me(p):
    return [r for r in cluster(p) if r.get("self")]


def setUpModule():
    require_env()
    rules = json.dumps({"rules": [{"type": "max_payload_bytes",
                                   "value": 1024}]})
    psql("INSERT INTO orgs (org_id, config) VALUES " +
            ",".join("('%s', '%s')" % (o, rules) for o in ORGS))


def tearDownModule():
    remove_private_tempdir(LOG_DIR)
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
            f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


class Replicas(unittest.TestCase):
    def start(self, **extra):
        p = start_replica(**extra)
        self.addCleanup(stop_if_running, p)
        return p

    def test_budget_holds_while_replicas_join_die_and_leave(self):
        sampler = Sampler()
        sampler.start()
        load = ReplicaLoad(ORGS)
        try:
            a = self.start()
            sampler.running = 1
            wait_for(lambda: settled(a, 1), 10, "a alone holds 6 of 9")
            load.set_targets([a])
            load.start()
            live = [a]
            for name in ("b", "c"):
                sampler.running += 1
                t0 = time.monotonic()
                p = self.start()
                # a new replica gets its fair share within 5 s
                wait_for(lambda: settled(p, len(live) + 1), 5,
                            name + " to get its share")
                joined = time.monotonic() - t0
                live.append(p)
                load.set_targets(live)
                print("replica %s: its share %s after %.2f s"
                      % (name, me(p)[0]["share"], joined), file=sys.stderr)
            for p in live:
                wait_for(lambda: settled(p, 3), 5, "every view to settle")
                self.assertEqual(sum(r["share"] for r in cluster(p)), BUDGET)
            time.sleep(1)  # load on three replicas; the sampler watches

            # SIGKILL one mid-load: its share is back within 10 s
            victim = live.pop(0)
            load.set_targets(live)
            dead_id = me(victim)[0]["id"]
            t0 = time.monotonic()
            victim.kill()
            for p in live:
                wait_for(lambda: all(r["id"] != dead_id
                                        for r in cluster(p)), 10 + 0.5,
                            "the dead replica's lease to expire")
            for p in live:
                wait_for(lambda: settled(p, 2), 3,
                            "the survivors to take its share")
            print("share of a SIGKILLed replica redistributed after %.2f s"
                  % (time.monotonic() - t0), file=sys.stderr)
            sampler.running -= 1

            # a fourth joins under load
            sampler.running += 1
            d = self.start()
            wait_for(lambda: settled(d, 3), 5, "d to get its share")
            live.append(d)
            load.set_targets(live)
            time.sleep(1)

            # a clean stop gives the share back at once (no lease wait)
            leaving = live.pop(0)
            load.set_targets(live)
            self.assertEqual(leaving.stop(), 0)
            sampler.running -= 1
            for p in live:
                wait_for(lambda: settled(p, 2), 4,
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
        got = set(psql("SELECT message_id FROM processed_messages WHERE "
                          f"org_id LIKE '{P}%'").split())
        self.assertEqual(set(ok) - got, set(), "a 200 without its row")

    def test_standalone_is_this_process_alone(self):
        p = Poold(env={"POOLD_CLIENT_AUTH": "none",
                          "POOLD_DB_MAX_CONNS": "7"})
        self.addCleanup(stop_if_running, p)
        r = p.get("/cluster", route="/cluster")
        self.assertEqual(r.status, 401)
        view = cluster(p)
        self.assertEqual(len(view), 1)
        self.assertEqual((view[0]["share"], view[0]["self"]), (7, True))
        # it is in no lease table
        self.assertEqual(psql("SELECT count(*) FROM cluster_replicas "
                                 "WHERE replica_id = '%s'" % view[0]["id"]),
                         "0")

    def test_the_smallest_configured_budget_is_in_force(self):
        a = self.start()
        wait_for(lambda: settled(a, 1), 10, "a alone")
        b = self.start(POOLD_CLUSTER_MAX_CONNS=5)

        def shares(p, want):
            view = cluster(p)
            mine = [r for r in view if r["self"]][0]
            return (len(view) == 2 and sum(r["share"] for r in view) == want
                    and mine["granted"] == mine["share"])
        for p in (a, b):
            wait_for(lambda: shares(p, 5), 5, "the budget of 5 on both")
        self.assertEqual(b.stop(), 0)
        wait_for(lambda: settled(a, 1), 5, "a's own budget again")

    def test_changes_reach_every_replica(self):
        ps = [self.start() for _ in range(3)]
        for p in ps:
            wait_for(lambda: settled(p, 3), 10, "three replicas")
        org = ORGS[0]
        # a resize on one replica: every replica within 5 s
        r = ps[0].request("PUT", "/pools/%s/size" % org, body={"max_size": 3},
                          token=TOKEN, route="/pools/{org_id}/size")
        self.assertEqual(r.status, 200, r.body)
        t0 = time.monotonic()
        for p in ps[1:]:
            wait_for(lambda: p.pool(org)["max_size"] == 3, 5,
                        "the resize to reach every replica")
        # a configuration change in the database: every replica within 5 s
        for p in ps:
            r = p.process({"id": P + uuid.uuid4().hex[:12], "org_id": org,
                           "payload": "abcd"})
            self.assertEqual((r.status, r.json()["passed"]), (200, True))
        psql("UPDATE orgs SET config = '{\"rules\":[{\"type\":"
                "\"max_payload_bytes\",\"value\":2}]}' "
                f"WHERE org_id = '{org}'")
        t0 = time.monotonic()

        def fails(p):
            r = p.process({"id": P + uuid.uuid4().hex[:12], "org_id": org,
                           "payload": "abcd"})
            return r.status == 200 and not r.json()["passed"]
        for p in ps:
            wait_for(lambda: fails(p), 5, "the new rules on every replica")
        # and the old rules never come back
        for p in ps:
            self.assertTrue(fails(p))
        print("config change on all replicas after %.2f s"
              % (time.monotonic() - t0), file=sys.stderr)
        # a deletion (the row gone): unknown on every replica within 5 s
        gone = P + "gone"
        psql(f"INSERT INTO orgs (org_id, config) VALUES ('{gone}', "
                "'{\"rules\":[]}')")
        for p in ps:
            wait_for(lambda: p.process({"id": P + uuid.uuid4().hex[:12],
                                           "org_id": gone,
                                           "payload": "ab"}).status == 200,
                        5, "the new org on every replica")
        psql(f"DELETE FROM processed_messages WHERE org_id = '{gone}';"
                f"DELETE FROM orgs WHERE org_id = '{gone}'")
        for p in ps:
            wait_for(lambda: p.process({"id": P + uuid.uuid4().hex[:12],
                                           "org_id": gone,
                                           "payload": "ab"}).status == 404,
                        5, "the deletion to reach every replica")
        psql("UPDATE orgs SET pool_max_size = NULL, config = "
                "'{\"rules\":[{\"type\":\"max_payload_bytes\","
                f"\"value\":1024}}]}}' WHERE org_id = '{org}'")


if __name__ == "__main__":
    unittest.main()
