"""test_pipeline.py — the commit pipeline (DESIGN.md "Committing:
processing in parallel, commits in groups"; docs/commit-pipeline.md)
against the real binary: backpressure is pool_exhausted whatever the
processing cost, processing runs in parallel, writes join groups behind a
commit in flight, and a leader answers its own request at once.

Uses test_http's helpers (Poold, psql, wait_for, the OpenAPI check). Every
org and message this file creates carries a random prefix and is deleted
at the end.
"""
import http.client
import json
import os
import subprocess
import threading
import time
import unittest
import uuid

import test_http as th
from test_http import ADMIN_URL, Poold, psql, wait_for
from harness import cpu_seconds

TOKEN = th.TOKEN
P = "tp" + uuid.uuid4().hex[:8] + "_"
ORG_X = P + "x"          # exhaustion with a processing cost
ORG_PAR = P + "par"      # parallel processing
ORG_G = P + "g"          # groups behind a lock
ORG_G2 = P + "g2"        # another org in the same groups
ORG_BAD = P + "bad"      # an org whose rows the table refuses
ORG_BAD2 = P + "bad2"    # and a second one
ORG_L = P + "lead"       # a leader answers at once
ORG_Q = P + "q"          # queued writes give their services back
ORG_F = P + "full"       # more than a full group queued
ORG_B = P + "borrow"     # a write leaving the queue borrows a service
# Three rules: a message fails hex_payload and id_prefix unless it is hex
# with a "msg_" id, and min_payload_bytes under 4 bytes.
RULES = json.dumps({"rules": [{"type": "hex_payload"},
                              {"type": "id_prefix", "value": "msg_"},
                              {"type": "min_payload_bytes", "value": 4}]})


def setUpModule():
    for name in ("POOLD_BIN", "DATABASE_URL", "POOLD_TEST_ADMIN_URL"):
        if not os.environ.get(name):
            raise unittest.SkipTest(name + " is not set")
    psql("INSERT INTO orgs (org_id, config) VALUES " + ",".join(
        f"('{o}', '{RULES}')"
        for o in (ORG_X, ORG_PAR, ORG_G, ORG_G2, ORG_BAD, ORG_BAD2, ORG_L,
                  ORG_Q, ORG_F, ORG_B)))


def tearDownModule():
    psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
         f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


def mid(tag=""):
    return "msg_" + P + tag + uuid.uuid4().hex[:10]


class Call(threading.Thread):
    """One POST /process on its own connection, timed."""

    def __init__(self, p, org, msg_id, payload="abcdef01"):
        super().__init__(daemon=True)
        self.p, self.msg = p, {"org_id": org, "id": msg_id,
                               "payload": payload}
        self.resp = None
        self.elapsed = None
        self.error = None

    def run(self):
        started = time.monotonic()
        try:
            self.resp = self.p.process(self.msg, timeout=60)
        except Exception as e:  # reported by the test, not lost
            self.error = e
        self.elapsed = time.monotonic() - started

    def result(self):
        self.join(60)
        assert self.error is None and self.resp is not None, self.error
        return self.resp


def run_all(calls):
    for c in calls:
        c.start()
    return [c.result() for c in calls]


class LockHolder:
    """A psql session holding a lock: `LOCK TABLE processed_messages IN
    SHARE ROW EXCLUSIVE MODE` (every INSERT waits), or a row (an
    uncommitted INSERT of one message: an insert of that key waits)."""

    def __init__(self, sql, tag):
        self.tag = "holder_" + tag + uuid.uuid4().hex[:8]
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN_URL],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True)
        self.proc.stdin.write("BEGIN;\n%s;\nSELECT '%s';\n" % (sql, self.tag))
        self.proc.stdin.flush()
        wait_for(lambda: psql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = "
            "'idle in transaction' AND query LIKE '%%%s%%'" % self.tag)
            == "1", 20, "the lock holder")

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("ROLLBACK;\n")
            self.proc.stdin.close()
            self.proc.wait(20)


def stall_two_commits(p, org, tag):
    """A table lock that holds every INSERT, and two commits of org waiting
    for it: the first, and a second in flight beside it (the first
    stalled). What org offers next queues. Returns the lock's holder and
    the two calls; the holder is released if the commits never wait."""
    holder = LockHolder("LOCK TABLE processed_messages IN SHARE ROW "
                        "EXCLUSIVE MODE", tag)
    leaders = []
    try:
        for n, what in ((1, "the first commit"), (2, "a second commit")):
            leaders.append(Call(p, org, mid("l%d" % n)))
            leaders[-1].start()
            wait_for(lambda: lock_waiters() == n, 20, what)
    except BaseException:
        holder.release()
        raise
    return holder, leaders


def lock_waiters():
    """poold's backends waiting for a lock."""
    return int(psql("SELECT count(*) FROM pg_stat_activity WHERE "
                    "application_name LIKE 'poold%' AND "
                    "wait_event_type = 'Lock'"))


def row_of(org, msg_id):
    return psql("SELECT passed, checks, array_to_string(failed_rules, ',')"
                " FROM processed_messages"
                f" WHERE org_id = '{org}' AND message_id = '{msg_id}'")


class Backpressure(unittest.TestCase):
    def test_503s_are_pool_exhausted_within_the_acquire_timeout(self):
        """Pool 1, 300 ms of processing, 40 concurrent requests: a request
        without a service by the acquire timeout answers 503
        pool_exhausted with Retry-After, counted in total_timeouts — never
        a group that holds it behind others' processing (before: one group
        of 39, answered after 12 s, 503 database_unavailable)."""
        p = Poold(env={"POOLD_POOL_SIZE": "1", "POOLD_PROCESS_COST_MS": "300",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "1500",
                       "POOLD_MAX_WAITING": "64"})
        try:
            self.assertEqual(p.process({"org_id": ORG_X, "id": mid(),
                                        "payload": "abcd"}).status, 200)
            before = p.pool(ORG_X)["total_timeouts"]
            calls = [Call(p, ORG_X, mid()) for _ in range(40)]
            answers = run_all(calls)
            codes = {}
            for c, r in zip(calls, answers):
                if r.status == 200:
                    continue
                self.assertEqual(r.status, 503, r.body)
                self.assertEqual(r.code, "pool_exhausted", r.body)
                self.assertIn("retry-after", r.headers)
                self.assertLessEqual(c.elapsed, 1.5 + 0.5, r.body)
                codes[r.code] = codes.get(r.code, 0) + 1
            ok = sum(r.status == 200 for r in answers)
            self.assertGreater(ok, 0)
            self.assertGreater(codes.get("pool_exhausted", 0), 0)
            self.assertEqual(p.pool(ORG_X)["total_timeouts"] - before,
                             codes["pool_exhausted"])
        finally:
            self.assertEqual(p.stop(), 0)


class Parallel(unittest.TestCase):
    def test_messages_are_processed_in_parallel(self):
        """Pool 4, 300 ms of processing: 4 concurrent requests take about
        one processing time, 8 about two — not one after another behind a
        committer."""
        p = Poold(env={"POOLD_POOL_SIZE": "4", "POOLD_PROCESS_COST_MS": "300",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "5000"})
        try:
            # Four services built (a build is not what is measured).
            run_all([Call(p, ORG_PAR, mid()) for _ in range(4)])
            wait_for(lambda: p.pool(ORG_PAR)["idle"] == 4, 10,
                     "four idle services")
            # Old code: 8 took at least 1.5 s (a flusher processed 4 in a
            # row); here at least 0.6 s.
            for n, bound in ((4, 0.9), (8, 1.35)):
                calls = [Call(p, ORG_PAR, mid()) for _ in range(n)]
                answers = run_all(calls)
                self.assertEqual({r.status for r in answers}, {200})
                slowest = max(c.elapsed for c in calls)
                # One after another would be n x 300 ms.
                self.assertLess(slowest, bound, "%d requests took %.2f s"
                                % (n, slowest))
            self.assertLessEqual(p.pool(ORG_PAR)["peak_active"], 4)
        finally:
            self.assertEqual(p.stop(), 0)


class Groups(unittest.TestCase):
    def test_writes_queued_behind_a_commit_form_one_group(self):
        """The INSERT held up by a table lock: the first request's commit
        waits, a second commit goes in flight beside it (the first stalled),
        and the rest queue, each holding its service. Released, the queue
        commits as one group; every request gets its own result:
        duplicates, conflicts, a repeat within the group, failed rules."""
        p = Poold(env={"POOLD_POOL_SIZE": "8",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "10000",
                       "POOLD_STATEMENT_TIMEOUT_MS": "20000"})
        stored = mid("st")
        holder = None
        try:
            self.assertEqual(p.process({"org_id": ORG_G, "id": stored,
                                        "payload": "abcd"}).status, 200)
            before = p.pool(ORG_G)
            holder, (first, second) = stall_two_commits(p, ORG_G, "table")
            rep = mid("rep")
            followers = [
                Call(p, ORG_G, stored, "abcd"),           # duplicate
                Call(p, ORG_G, stored, "abcdef"),         # id_conflict
                Call(p, ORG_G, rep, "abcd"),              # repeated in
                Call(p, ORG_G, rep, "abcd"),              # the group
                Call(p, ORG_G, mid("nohex"), "xyz!"),     # fails rules
                Call(p, ORG_G, P + "noprefix", "ab12"),   # fails id_prefix
            ]
            for c in followers:
                c.start()
            wait_for(lambda: p.pool(ORG_G)["waiting"] == len(followers), 20,
                     "the followers to queue")
            self.assertEqual(lock_waiters(), 2)
            # Both commits in flight stalled, the queue at its cap: the
            # queue sleeps (before: its head woke at once, again and again,
            # a CPU spent until a commit ended). A measuring window, not a
            # synchronisation: poold must stay near idle during it.
            cpu0 = cpu_seconds(p.proc.pid)
            time.sleep(1.5)
            spent = cpu_seconds(p.proc.pid) - cpu0
            self.assertLess(spent, 0.5, "poold spun while its commits waited")
            self.assertEqual(lock_waiters(), 2)
            holder.release()
            r_first, r_second = first.result(), second.result()
            answers = [c.result() for c in followers]
            for r in (r_first, r_second):
                self.assertEqual(r.status, 200, r.body)
                self.assertFalse(r.json()["duplicate"])
            dup, conflict, rep1, rep2, nohex, noprefix = answers
            self.assertEqual(dup.status, 200, dup.body)
            self.assertTrue(dup.json()["duplicate"])
            self.assertEqual((conflict.status, conflict.code),
                             (409, "id_conflict"), conflict.body)
            self.assertEqual({rep1.status, rep2.status}, {200})
            self.assertEqual(sorted([rep1.json()["duplicate"],
                                     rep2.json()["duplicate"]]),
                             [False, True])
            self.assertEqual(nohex.status, 200, nohex.body)
            self.assertFalse(nohex.json()["passed"])
            self.assertEqual(nohex.json()["details"]["failed"],
                             ["hex_payload"])
            self.assertEqual(noprefix.json()["details"]["failed"],
                             ["id_prefix"])
            self.assertEqual(row_of(ORG_G, P + "noprefix"), "f|3|id_prefix")
            self.assertEqual(row_of(ORG_G, rep), "t|3|")
            after = p.pool(ORG_G)
            commits = after["group_commits"] - before["group_commits"]
            messages = after["group_messages"] - before["group_messages"]
            self.assertEqual(messages, 8)
            # The first, the second, then the queue as one group.
            self.assertEqual(commits, 3, after)
            self.assertGreater(messages / commits, 1)
        finally:
            if holder:
                holder.release()
            self.assertEqual(p.stop(), 0)


class SeveralOrgs(unittest.TestCase):
    """The queue is every org's: writes of several orgs queued behind a
    commit in flight go in one statement, each settled as its org's."""

    def queue(self, p, calls):
        for c in calls:
            c.start()
        wait_for(lambda: sum(p.pool(o)["waiting"] for o in
                             (ORG_G, ORG_G2, ORG_BAD, ORG_BAD2)) ==
                 len(calls), 20,
                 "the writes to queue")

    def totals(self, p):
        r = p.get("/stats", token=TOKEN, route="/stats")
        self.assertEqual(r.status, 200, r.body)
        return r.json()["totals"]

    def poold(self):
        return Poold(env={"POOLD_POOL_SIZE": "8",
                          "POOLD_ACQUIRE_TIMEOUT_MS": "10000",
                          "POOLD_STATEMENT_TIMEOUT_MS": "20000"})

    def test_writes_of_several_orgs_form_one_group(self):
        p = self.poold()
        stored, same, own = mid("st"), mid("same"), mid("own")
        holder = None
        try:
            self.assertEqual(p.process({"org_id": ORG_G2, "id": stored,
                                        "payload": "abcd"}).status, 200)
            before = {o: p.pool(o) for o in (ORG_G, ORG_G2)}
            totals0 = self.totals(p)
            holder, stalled = stall_two_commits(p, ORG_G, "orgs")
            both_waiting = time.monotonic()
            calls = [Call(p, ORG_G2, same),            # the same id in
                     Call(p, ORG_G, same),             # two orgs: two rows
                     Call(p, ORG_G2, stored, "abcd"),  # duplicate
                     Call(p, ORG_G2, stored, "ab12"),  # id_conflict
                     Call(p, ORG_G, own)]
            self.queue(p, calls)
            stalled_s = time.monotonic() - both_waiting
            holder.release()
            for c in stalled:
                self.assertEqual(c.result().status, 200)
            same2, same1, dup, conflict, new = [c.result() for c in calls]
            for r in (same2, same1, new):
                self.assertEqual(r.status, 200, r.body)
                self.assertFalse(r.json()["duplicate"])
            self.assertTrue(dup.json()["duplicate"], dup.body)
            self.assertEqual((conflict.status, conflict.code),
                             (409, "id_conflict"), conflict.body)
            self.assertEqual(row_of(ORG_G, same), "t|3|")
            self.assertEqual(row_of(ORG_G2, same), "t|3|")
            after = {o: p.pool(o) for o in (ORG_G, ORG_G2)}
            delta = {o: (after[o]["group_commits"] -
                         before[o]["group_commits"],
                         after[o]["group_messages"] -
                         before[o]["group_messages"])
                     for o in (ORG_G, ORG_G2)}
            # ORG_G: the two stalled commits and the group; ORG_G2: only
            # the group, with its three writes.
            self.assertEqual(delta, {ORG_G: (3, 4), ORG_G2: (1, 3)})
            # The totals count the shared statement once: 3 statements.
            totals1 = self.totals(p)
            self.assertEqual((totals1["group_commits"] -
                              totals0["group_commits"],
                              totals1["group_messages"] -
                              totals0["group_messages"]), (3, 7))
            # What they took: each stalled commit waited at least as long
            # as both were seen waiting; the second started beside the
            # first.
            took = (totals1["group_commit_ns_sum"] -
                    totals0["group_commit_ns_sum"])
            self.assertGreaterEqual(took, 2 * stalled_s * 1e9, totals1)
            overlapped = (totals1["group_commits_overlapped"] -
                          totals0["group_commits_overlapped"])
            # The first led alone; the group may start beside the second.
            self.assertIn(overlapped, (1, 2), totals1)
            # One statement for both orgs' new rows: one transaction, on
            # every dedupe path (near a partition's bounds too).
            self.assertEqual(psql(
                "SELECT count(DISTINCT xmin::text), count(*) FROM "
                "processed_messages WHERE message_id IN "
                f"('{same}', '{own}')"), "1|3")
        finally:
            if holder:
                holder.release()
            self.assertEqual(p.stop(), 0)

    def refused_group(self, orgs, refused):
        """One group of a message of each of orgs (queued behind two
        stalled commits of ORG_G), the table refusing the rows of the
        orgs in refused: the answers, the ids and poold's log (once every
        503 is in it)."""
        p = self.poold()
        name = P + "refuse"
        psql(f"ALTER TABLE processed_messages ADD CONSTRAINT {name} CHECK "
             "(org_id NOT IN (%s))" % ",".join(f"'{o}'" for o in refused))
        holder = None
        try:
            holder, stalled = stall_two_commits(p, ORG_G, "orgs")
            ids = [mid(o[len(P):]) for o in orgs]
            calls = [Call(p, o, i) for o, i in zip(orgs, ids)]
            self.queue(p, calls)
            holder.release()
            for c in stalled:
                self.assertEqual(c.result().status, 200)
            answers = [c.result() for c in calls]
            wait_for(lambda: p.logtext().count('status="503"') >=
                     len(refused), 10, "the 503s in the access log")
            return answers, ids, p.logtext().splitlines()
        finally:
            if holder:
                holder.release()
            psql("ALTER TABLE processed_messages DROP CONSTRAINT IF EXISTS "
                 + name)
            self.assertEqual(p.stop(), 0)

    def test_one_orgs_refused_row_fails_only_its_messages(self):
        """A table constraint refuses ORG_BAD's rows: the group's statement
        fails, and each org's part goes again alone; only ORG_BAD's
        message fails."""
        (bad, g2, g), ids, _ = self.refused_group((ORG_BAD, ORG_G2, ORG_G),
                                                  (ORG_BAD,))
        self.assertEqual(bad.status, 503, bad.body)
        self.assertEqual(row_of(ORG_BAD, ids[0]), "")
        for org, i, r in ((ORG_G2, ids[1], g2), (ORG_G, ids[2], g)):
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(row_of(org, i), "t|3|")

    def test_two_orgs_refused_rows_are_logged_each_under_its_org(self):
        """Two orgs' rows refused in one group: each fails alone, and the
        answer's logged detail names neither org's row (it named the last
        failing org's row under every failed org); each org's error is
        logged under that org."""
        answers, _, log = self.refused_group((ORG_BAD, ORG_BAD2, ORG_G),
                                             (ORG_BAD, ORG_BAD2))
        self.assertEqual([r.status for r in answers], [503, 503, 200])
        for org, other in ((ORG_BAD, ORG_BAD2), (ORG_BAD2, ORG_BAD)):
            [line] = [ln for ln in log if " request " in ln and
                      'org="%s"' % org in ln and 'status="503"' in ln]
            self.assertNotIn("(%s," % other, line)  # "Failing row contains"
            refused = [ln for ln in log if "commit refused an org" in ln and
                       'org="%s"' % org in ln]
            self.assertEqual(len(refused), 1, refused)
            self.assertIn(org, refused[0].split('error=', 1)[1])

    def test_a_statement_timeout_fails_the_whole_group_at_once(self):
        """One org's row waits for a lock held elsewhere past the statement
        timeout: the group's statement fails for no row's fault, so every
        message of the group gets 503 database_unavailable at once (none is
        sent again org by org: each part would wait out the lock again,
        and the last would find its connection closed)."""
        p = Poold(env={"POOLD_POOL_SIZE": "8",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "2000",
                       "POOLD_STATEMENT_TIMEOUT_MS": "2000"})
        x, y, w = mid("x"), mid("y"), mid("w")
        hold = lambda m: LockHolder(
            "INSERT INTO processed_messages (org_id, message_id, passed, "
            "checks, payload_sha256) VALUES ('%s', '%s', true, 0, '\\x00')"
            % (ORG_G, m), "row")
        holders = [hold(m) for m in (x, y, w)]
        try:
            # Two commits in flight, each waiting for a row lock.
            first = Call(p, ORG_G, x)
            first.start()
            wait_for(lambda: lock_waiters() == 1, 20, "the first commit")
            second = Call(p, ORG_G, y)
            second.start()
            wait_for(lambda: lock_waiters() == 2, 20, "a second commit")
            calls = [Call(p, ORG_G2, mid("n2")), Call(p, ORG_G, w),
                     Call(p, ORG_BAD, mid("nb"))]
            self.queue(p, calls)
            holders[0].release()  # the first commits; the group goes next
            started = time.monotonic()
            self.assertEqual(first.result().status, 200)
            for r in [c.result() for c in calls]:
                self.assertEqual(r.status, 503, r.body)
                self.assertEqual(r.code, "database_unavailable", r.body)
            # One statement timeout (2 s) and its slack, not one per org.
            self.assertLess(time.monotonic() - started, 3.5)
        finally:
            for h in holders:
                h.release()
            self.assertEqual(p.stop(), 0)


class QueuedWrites(unittest.TestCase):
    """Only a committer needs a service: a queued write gives its own back
    (the head of the queue keeps one to lead the next group), so the pool
    size bounds the org's processing, not how many writes a group can
    take."""

    def stalled(self, org, followers, pool_size=4):
        """Two commits stalled behind a table lock, then followers: the
        server, the lock, the two leaders and the followers' calls."""
        p = Poold(env={"POOLD_POOL_SIZE": str(pool_size),
                       "POOLD_ACQUIRE_TIMEOUT_MS": "10000",
                       "POOLD_STATEMENT_TIMEOUT_MS": "20000",
                       "POOLD_MAX_WAITING": "200"})
        self.addCleanup(lambda: self.assertEqual(p.stop(), 0))
        self.assertEqual(p.process({"org_id": org, "id": mid(),
                                    "payload": "abcd"}).status, 200)
        holder, leaders = stall_two_commits(p, org, "table")
        self.addCleanup(holder.release)
        calls = [Call(p, org, mid("f%d" % i)) for i in range(followers)]
        for c in calls:
            c.start()
        return p, holder, leaders, calls

    def release(self, p, org, holder, calls, before):
        """Release the lock: every call answers 200. The org's statements
        and messages committed since before."""
        holder.release()
        answers = [c.result() for c in calls]
        self.assertEqual([r.status for r in answers], [200] * len(calls),
                         [r.body for r in answers if r.status != 200])
        after = p.pool(org)
        self.assertLessEqual(after["peak_active"], 4)
        return (after["group_commits"] - before["group_commits"],
                after["group_messages"] - before["group_messages"])

    def test_queued_writes_give_their_services_back(self):
        """Pool 4, two commits stalled, 8 writes more: all 8 are processed
        and queued while 3 services are lent (the two leaders' and the
        head's); released, they commit as one group (before: 2 queued
        holding the last 2 services, 6 waited for a service, and the 8
        took more statements)."""
        p, holder, leaders, calls = self.stalled(ORG_Q, 8)
        before = p.pool(ORG_Q)
        wait_for(lambda: p.pool(ORG_Q)["waiting"] == 8, 20,
                 "the writes to queue")
        self.assertEqual(p.pool(ORG_Q)["active"], 3)
        holders = p.get(f"/pools/{ORG_Q}/holders", token=TOKEN,
                        route="/pools/{org_id}/holders").json()["holders"]
        self.assertEqual(len(holders), 3, holders)
        # The two stalled ones, then the eight as one group.
        self.assertEqual(self.release(p, ORG_Q, holder, leaders + calls,
                                      before), (3, 10))

    def test_more_than_a_full_group(self):
        """Pool 4, two commits stalled, 70 writes more: the writes queue
        without their services until 64 are queued, then a third commit
        takes them (and stalls too). Released, every write commits, in a
        few statements (before: 2 writes queued, holding the last
        services, the others waited for a service, and no third commit
        ever started)."""
        p, holder, leaders, calls = self.stalled(ORG_F, 70)
        before = p.pool(ORG_F)
        wait_for(lambda: lock_waiters() >= 3, 30, "a third commit")
        self.assertLessEqual(p.pool(ORG_F)["active"], 4)
        commits, messages = self.release(p, ORG_F, holder, leaders + calls,
                                         before)
        self.assertEqual(messages, 72)
        self.assertLessEqual(commits, 10)
        ids = [c.msg["id"] for c in leaders + calls]
        stored = psql("SELECT count(*) FROM processed_messages WHERE "
                      f"org_id = '{ORG_F}' AND message_id IN (" +
                      ",".join(f"'{i}'" for i in ids) + ")")
        self.assertEqual(stored, str(len(ids)))

    def test_a_write_leaving_the_queue_borrows_a_service(self):
        """A queued write that gave its service back and reaches its
        deadline in the queue commits alone on a service it borrows. Pool
        4, acquire timeout 1 s, statement timeout 5 s: the org's first
        commit is held 2 s by a lock, so a queued write leaves 4 s (2 mean
        commits) before its deadline, 2.5 s after it queued, while the
        commits in flight still wait for the lock (they give up at 5 s)."""
        p = Poold(env={"POOLD_POOL_SIZE": "4",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "1000",
                       "POOLD_STATEMENT_TIMEOUT_MS": "5000"})
        self.addCleanup(lambda: self.assertEqual(p.stop(), 0))
        org = ORG_B
        holder = LockHolder("LOCK TABLE processed_messages IN SHARE ROW "
                            "EXCLUSIVE MODE", "slow")
        self.addCleanup(holder.release)
        slow = Call(p, org, mid("slow"))
        slow.start()
        wait_for(lambda: lock_waiters() == 1, 20, "the first commit")
        # Not a synchronisation: how long the commit takes is what this
        # sets (the mean commit latency starts at it).
        time.sleep(2.0)
        holder.release()
        self.assertEqual(slow.result().status, 200)
        holder = LockHolder("LOCK TABLE processed_messages IN SHARE ROW "
                            "EXCLUSIVE MODE", "table")
        self.addCleanup(holder.release)
        before = p.pool(org)
        calls = []
        for waiters, waiting in ((1, 0), (2, 0), (2, 1), (2, 2)):
            calls.append(Call(p, org, mid("w%d" % len(calls))))
            calls[-1].start()
            wait_for(lambda: lock_waiters() == waiters and
                     p.pool(org)["waiting"] == waiting, 20,
                     "%d commits, %d queued" % (waiters, waiting))
        # Two leaders and the head hold services; the second queued write
        # gave its own back.
        self.assertEqual(p.pool(org)["active"], 3)
        # Both queued writes leave at their deadlines and commit alone.
        wait_for(lambda: lock_waiters() == 4, 10, "four commits")
        self.assertEqual(self.release(p, org, holder, calls, before), (4, 4))
        self.assertEqual(row_of(org, calls[3].msg["id"]), "t|3|")


class Leader(unittest.TestCase):
    def test_a_leader_answers_its_own_request_at_once(self):
        """A leader commits one group and answers: the group queued behind
        it is committed by a follower it promoted, not in further rounds of
        the leader's (before: up to 16 rounds before its own answer). Row
        locks held elsewhere: the leader's message waits for one, the
        second commit for another, and the queued group holds a message
        of that second row. Releasing the first lock answers the leader
        while the group still waits."""
        p = Poold(env={"POOLD_POOL_SIZE": "8",
                       "POOLD_ACQUIRE_TIMEOUT_MS": "10000",
                       "POOLD_STATEMENT_TIMEOUT_MS": "20000"})
        x, y = mid("x"), mid("y")
        hold = lambda m: LockHolder(
            "INSERT INTO processed_messages (org_id, message_id, passed, "
            "checks, payload_sha256) VALUES ('%s', '%s', true, 0, '\\x00')"
            % (ORG_L, m), "row")
        hx = hy = None
        try:
            self.assertEqual(p.process({"org_id": ORG_L, "id": mid(),
                                        "payload": "abcd"}).status, 200)
            before = p.pool(ORG_L)
            hy, hx = hold(y), hold(x)
            leader = Call(p, ORG_L, y, "abcd")
            leader.start()
            wait_for(lambda: lock_waiters() == 1, 20, "the leader's commit")
            second = Call(p, ORG_L, x, "abcd")
            second.start()
            wait_for(lambda: lock_waiters() == 2, 20, "a second commit")
            group = [Call(p, ORG_L, x, "abcd"), Call(p, ORG_L, mid(), "abcd"),
                     Call(p, ORG_L, mid(), "abcd")]
            for c in group:
                c.start()
            wait_for(lambda: p.pool(ORG_L)["waiting"] == 3, 20,
                     "the group to queue")
            hy.release()  # the leader's row: its commit ends
            r = leader.result()
            # Its own answer: the stored row of the session that held it
            # was rolled back, so the leader inserted it.
            self.assertEqual(r.status, 200, r.body)
            self.assertFalse(r.json()["duplicate"])
            # The group it promoted waits for x's lock: nobody in it is
            # answered yet, and the leader did not commit it.
            wait_for(lambda: lock_waiters() == 2, 20,
                     "the promoted group's commit")
            self.assertTrue(all(c.is_alive() for c in group))
            self.assertTrue(second.is_alive())
            mid_run = p.pool(ORG_L)
            self.assertEqual(mid_run["group_commits"] -
                             before["group_commits"], 1)
            self.assertEqual(mid_run["waiting"], 0)
            hx.release()
            for c in [second] + group:
                self.assertEqual(c.result().status, 200, c.resp.body)
            self.assertEqual(sorted(c.resp.json()["duplicate"]
                                    for c in [second] + group[:1]),
                             [False, True])
        finally:
            for h in (hx, hy):
                if h:
                    h.release()
            self.assertEqual(p.stop(), 0)


if __name__ == "__main__":
    unittest.main()
