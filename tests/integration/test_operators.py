"""test_operators.py — the operator controls against the real binary:
pause/resume (stored, followed by a second poold sharing the database),
drain, holders and held-too-long detection, the dashboard's files, and the
bound on per-org metric series.

Uses test_http's helpers (Poold, psql, wait_for, the OpenAPI check). Every
org this file creates carries a random prefix and is deleted at the end.
"""
import json
import os
import re
import subprocess
import threading
import time
import unittest
import uuid

from harness import (SOURCE_DIR, TOKEN, Poold, private_tempdir, psql,
                     remove_private_tempdir, require_env, wait_for)

P = "op" + uuid.uuid4().hex[:8] + "_"
ORG_P = P + "pause"   # paused and resumed
ORG_D = P + "drain"   # drained
ORG_H = P + "hold"    # a slow request holds its service
ORG_X = P + "other"   # never paused: isolation
ORG_B = P + "batch"   # a slow batch holds its service
NONE = {"POOLD_CLIENT_AUTH": "none"}

SERVER = None
# poold logs in a directory of this module's own: other test runs on the
# same machine clean /tmp/poold-test-* files.
LOGDIR = private_tempdir("opstest-")


def setUpModule():
    global SERVER
    require_env()
    psql("INSERT INTO orgs (org_id, config) VALUES " + ",".join(
        f"('{o}', '{{\"rules\": []}}')" for o in (ORG_P, ORG_D, ORG_H, ORG_X, ORG_B)))
    SERVER = Poold(env=NONE)


def tearDownModule():
    code = SERVER.stop() if SERVER is not None else 0
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
         f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")
    remove_private_tempdir(LOGDIR)
    if code != 0:
        raise AssertionError("the shared poold exited with %s" % code)


def mid():
    return P + uuid.uuid4().hex[:12]


def msg(org, payload="ab"):
    return {"id": mid(), "org_id": org, "payload": payload}


def batch(srv, org, n=2, **kw):
    body = {"org_id": org, "messages": [
        {"id": mid(), "payload": "ab"} for _ in range(n)]}
    return srv.request("POST", "/process/batch", body=body,
                       route="/process/batch", **kw)


def rows(org):
    return int(psql(f"SELECT count(*) FROM processed_messages "
                    f"WHERE org_id = '{org}'"))


class PauseResume(unittest.TestCase):
    def post(self, srv, org, what, token=TOKEN):
        return srv.request("POST", f"/pools/{org}/{what}", token=token,
                           route="/pools/{org_id}/" + what)

    def test_pause_refuses_work_everywhere_and_resume_restores_it(self):
        other = Poold(env=NONE)  # a replica sharing the database
        try:
            for srv in (SERVER, other):
                self.assertEqual(srv.process(msg(ORG_P)).status, 200)
            version = psql(f"SELECT config_version FROM orgs "
                           f"WHERE org_id = '{ORG_P}'")
            r = self.post(SERVER, ORG_P, "pause")
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json(), {"org_id": ORG_P, "paused": True})
            self.assertEqual(psql(f"SELECT paused FROM orgs "
                                  f"WHERE org_id = '{ORG_P}'"), "t")
            # this poold at once
            r = SERVER.process(msg(ORG_P))
            self.assertEqual((r.status, r.code), (503, "org_paused"))
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            # batches too, with nothing written
            before = rows(ORG_P)
            r = batch(SERVER, ORG_P)
            self.assertEqual((r.status, r.code), (503, "org_paused"))
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            self.assertEqual(rows(ORG_P), before, "a paused batch wrote")
            # the replica within 5 s
            t0 = time.monotonic()
            wait_for(lambda: other.process(msg(ORG_P)).status == 503, 6,
                     "the replica to follow the pause", interval=0.1)
            self.assertLess(time.monotonic() - t0, 5.5)
            before = rows(ORG_P)
            for srv in (SERVER, other):
                r = srv.process(msg(ORG_P))
                self.assertEqual((r.status, r.code), (503, "org_paused"))
            self.assertEqual(rows(ORG_P), before, "a paused org wrote a row")
            # other orgs are not affected; nothing was retired
            self.assertEqual(SERVER.process(msg(ORG_X)).status, 200)
            self.assertEqual(psql(f"SELECT config_version FROM orgs "
                                  f"WHERE org_id = '{ORG_P}'"), version)
            st = SERVER.pool(ORG_P)
            self.assertIs(st["paused"], True)
            self.assertIs(SERVER.pool(ORG_X)["paused"], False)
            self.assertEqual(st["destroyed_by"]["retired"], 0)
            self.assertGreaterEqual(st["idle"], 1)
            # pausing twice is fine
            self.assertEqual(self.post(SERVER, ORG_P, "pause").status, 200)
            r = self.post(other, ORG_P, "resume")
            self.assertEqual(r.json(), {"org_id": ORG_P, "paused": False})
            self.assertEqual(other.process(msg(ORG_P)).status, 200)
            self.assertEqual(batch(other, ORG_P).status, 200)
            wait_for(lambda: SERVER.process(msg(ORG_P)).status == 200, 6,
                     "this poold to follow the resume", interval=0.1)
            # each change left its audit entry, newest first
            entries = SERVER.get(f"/audit?org_id={ORG_P}&limit=10",
                                 token=TOKEN).json()["entries"]
            got = [(e["action"], e["before"], e["after"]) for e in entries]
            self.assertEqual(got[:3], [
                ("pool.resume", {"paused": True}, {"paused": False}),
                ("pool.pause", {"paused": True}, {"paused": True}),
                ("pool.pause", {"paused": False}, {"paused": True})])
            self.assertEqual(entries[0]["actor"]["scope"], "admin")
            self.assertEqual(entries[0]["request_id"],
                             r.headers["x-request-id"])
        finally:
            psql(f"UPDATE orgs SET paused = false WHERE org_id = '{ORG_P}'")
            self.assertEqual(other.stop(), 0)

    def test_errors(self):
        for what in ("pause", "resume", "drain"):
            with self.subTest(what=what):
                r = self.post(SERVER, ORG_X, what, token="wrong")
                self.assertEqual((r.status, r.code), (401, "unauthorized"))
                r = self.post(SERVER, P + "nosuch", what)
                self.assertEqual((r.status, r.code), (404, "unknown_org"))
                r = self.post(SERVER, "bad.id", what)
                self.assertEqual((r.status, r.code), (400, "invalid_org_id"))
                r = SERVER.request("GET", f"/pools/{ORG_X}/{what}",
                                   token=TOKEN)
                self.assertEqual(r.status, 405)
                self.assertEqual(r.headers["allow"], "POST")
        self.assertEqual(psql(f"SELECT paused FROM orgs "
                              f"WHERE org_id = '{ORG_X}'"), "f")
        r = SERVER.get(f"/pools/{ORG_X}/holders", token="wrong",
                       route="/pools/{org_id}/holders")
        self.assertEqual(r.status, 401)


def slow_request(srv, org, out):
    out["resp"] = srv.process(msg(org), timeout=60)


def wait_holder(srv, org, what):
    """The org's holders once one has held its service over 100 ms."""
    def one_holder():
        h = srv.get(f"/pools/{org}/holders", token=TOKEN,
                    route="/pools/{org_id}/holders").json()["holders"]
        return h if h and h[0]["held_ms"] > 100 else None
    return wait_for(one_holder, 10, what)


class DrainAndHolders(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Each request holds its service 1.5 s; a hold over 300 ms is
        # flagged.
        cls.srv = Poold(env=dict(NONE, POOLD_PROCESS_COST_MS="1500",
                                 POOLD_HOLD_WARN_MS="300"))

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def test_drain_closes_idle_now_and_lent_on_release(self):
        srv = self.srv
        done = {}
        t = threading.Thread(target=slow_request, args=(srv, ORG_D, {}))
        t.start()
        t2 = threading.Thread(target=slow_request, args=(srv, ORG_D, done))
        t2.start()
        t.join()
        t2.join()
        wait_for(lambda: srv.pool(ORG_D)["idle"] == 2, 10, "two idle")
        # one lent, one idle when the drain comes
        held = {}
        t = threading.Thread(target=slow_request, args=(srv, ORG_D, held))
        t.start()
        wait_for(lambda: srv.pool(ORG_D)["active"] == 1, 10, "a lent one")
        before = srv.pool(ORG_D)
        r = srv.request("POST", f"/pools/{ORG_D}/drain", token=TOKEN,
                        route="/pools/{org_id}/drain")
        self.assertEqual(r.status, 200, r.body)
        st = r.json()
        audit = srv.get(f"/audit?org_id={ORG_D}&limit=1",
                        token=TOKEN).json()["entries"][0]
        self.assertEqual(audit["action"], "pool.drain")
        self.assertEqual(audit["request_id"], r.headers["x-request-id"])
        self.assertEqual(audit["before"], {"idle": 1, "active": 1})
        self.assertEqual(audit["after"], {"idle": 0, "active": 1})
        self.assertEqual(st["idle"], 0)
        self.assertEqual(st["active"], 1)
        self.assertEqual(st["destroyed_by"]["retired"],
                         before["destroyed_by"]["retired"] + 1)
        t.join()
        self.assertEqual(held["resp"].status, 200)  # the holder finished
        st = srv.pool(ORG_D)
        self.assertEqual((st["idle"], st["active"]), (0, 0))
        self.assertEqual(st["destroyed_by"]["retired"],
                         before["destroyed_by"]["retired"] + 2)
        created = st["created"]
        self.assertEqual(srv.process(msg(ORG_D)).status, 200)
        self.assertEqual(srv.pool(ORG_D)["created"], created + 1)

    def assert_held_once(self, org, route, send):
        """send(out) holds one of org's services over POOLD_HOLD_WARN_MS:
        it is listed with its request id and route while held, gone after,
        counted and logged once. Returns its request id."""
        srv = self.srv
        r = srv.get(f"/pools/{org}/holders", token=TOKEN,
                    route="/pools/{org_id}/holders")
        self.assertEqual((r.status, r.json()), (200, {"holders": []}))
        out = {}
        t = threading.Thread(target=send, args=(out,))
        t.start()
        holders = wait_holder(srv, org, "a holder of " + route)
        t.join()
        self.assertEqual(out["resp"].status, 200, out["resp"].body)
        self.assertEqual(len(holders), 1)
        self.assertEqual(holders[0]["route"], route)
        rid = out["resp"].headers["x-request-id"]
        self.assertEqual(holders[0]["request_id"], rid)
        self.assertEqual(srv.get(f"/pools/{org}/holders",
                                 token=TOKEN).json(), {"holders": []})
        # flagged once (by housekeeping while held, or at release)
        self.assertEqual(srv.pool(org)["held_too_long"], 1)
        lines = [l for l in srv.logtext().splitlines()
                 if "service held too long" in l and rid in l]
        self.assertEqual(len(lines), 1, lines)
        return rid

    def test_holders_and_held_too_long(self):
        srv = self.srv
        self.assert_held_once(ORG_H, "POST /process",
                              lambda out: slow_request(srv, ORG_H, out))
        metrics = srv.get("/metrics", token=TOKEN).body.decode()
        self.assertIn(f'poold_pool_held_too_long_total{{org="{ORG_H}"}} 1',
                      metrics)
        stats = srv.get("/stats", token=TOKEN, route="/stats").json()
        self.assertGreaterEqual(stats["totals"]["held_too_long"], 1)

    def test_a_batch_is_held_by_its_request(self):
        srv = self.srv

        def slow_batch(out):
            out["resp"] = batch(srv, ORG_B, n=1, timeout=60)
        self.assert_held_once(ORG_B, "POST /process/batch", slow_batch)


class MetricsBound(unittest.TestCase):
    def test_per_org_series_are_bounded_with_an_other_bucket(self):
        top, n = 5, 12
        orgs = [f"{P}m{i:02d}" for i in range(n)]
        psql("INSERT INTO orgs (org_id, config) VALUES " + ",".join(
            f"('{o}', '{{\"rules\": []}}')" for o in orgs))
        srv = Poold(env=dict(NONE, POOLD_METRICS_TOP_ORGS=str(top)))
        try:
            # org i gets n - i requests: the busiest are the first ones
            for i, o in enumerate(orgs):
                for _ in range(n - i):
                    # a 503 wrote nothing (a loaded machine can make a
                    # build miss its deadline): retrying keeps counts exact
                    m = msg(o)
                    for _ in range(5):
                        r = srv.process(m)
                        if r.status != 503:
                            break
                    self.assertEqual(r.status, 200, r.body)
            text = srv.get("/metrics", token=TOKEN).body.decode()
            acq = dict(re.findall(
                r'^poold_pool_acquired_total\{org="([^"]+)"\} (\d+)$', text,
                re.M))
            self.assertEqual(set(acq), set(orgs[:top]) | {"_other"})
            self.assertEqual(int(acq["_other"]),
                             sum(n - i for i in range(top, n)))
            self.assertEqual(int(acq[orgs[0]]), n)
            self.assertIn(f"poold_pool_orgs {n}\n", text)
            labels = set(re.findall(r'org="([^"]+)"', text))
            self.assertEqual(len(labels), top + 1)
            # /stats still lists every org
            pools = srv.get("/stats", token=TOKEN).json()["pools"]
            self.assertTrue(set(orgs) <= set(pools))
        finally:
            self.assertEqual(srv.stop(), 0)


class OperationsDocExamples(unittest.TestCase):
    """The curl block of docs/operations.md's "Operators" section, as
    written."""

    def test_curl_examples_answer_as_documented(self):
        with open(os.path.join(SOURCE_DIR, "docs", "operations.md"),
                  encoding="utf-8") as f:
            doc = f.read()
        section = doc.split("## Operators", 1)[1].split("\n## ", 1)[0]
        block = section.split("```sh", 1)[1].split("```", 1)[0]
        cmds = [l.strip() for l in block.splitlines()
                if l.strip().startswith("curl ")]
        self.assertEqual(len(cmds), 4, cmds)
        outs = []
        try:
            for c in cmds:
                c = c.replace("localhost:8080", "localhost:%d" % SERVER.port)
                r = subprocess.run(["bash", "-c", c], capture_output=True,
                                   text=True, timeout=30,
                                   env=dict(os.environ, TOKEN=TOKEN))
                self.assertEqual(r.returncode, 0, c + "\n" + r.stderr)
                outs.append(json.loads(r.stdout))
        finally:
            psql("UPDATE orgs SET paused = false WHERE org_id = 'org_001'")
        pause, resume, drain, holders = outs
        self.assertEqual(pause, {"org_id": "org_001", "paused": True})
        self.assertEqual(resume, {"org_id": "org_001", "paused": False})
        self.assertEqual((drain["idle"], drain["active"]), (0, 0))
        self.assertEqual(holders, {"holders": []})


class Dashboard(unittest.TestCase):
    def test_page_and_assets_need_no_token_and_load_nothing_foreign(self):
        r = SERVER.get("/dashboard", route="/dashboard")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/html"))
        csp = r.headers["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        page = r.body.decode()
        # every src/href is poold's own
        for ref in re.findall(r'(?:src|href)="([^"]*)"', page):
            self.assertTrue(ref.startswith("/dashboard/"), ref)
        for name, ctype in (("app.js", "text/javascript"),
                            ("style.css", "text/css")):
            r = SERVER.get("/dashboard/" + name)
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["content-type"].startswith(ctype))
            self.assertGreater(len(r.body), 100)
        for bad in ("nope.js", "index.html", "..%2f..%2fetc", "x" * 200):
            r = SERVER.get("/dashboard/" + bad, route="/dashboard/{asset}")
            self.assertEqual((r.status, r.code), (404, "not_found"), bad)


if __name__ == "__main__":
    unittest.main()
