"""test_lifecycle.py — issue 21 against the real binary: processed_messages
partitioned by time, retention dropping whole partitions, the dedupe window
across a partition boundary under concurrency, GET
/orgs/{org_id}/messages/{message_id}, and the in-place migration of a
database made by the previous schema (schema_v0/).

Each test makes a database of its own on the fixture's cluster (partitions
of minutes or seconds must not meet the shared database's days), and a
poold on it. Compressed time: POOLD_LIFECYCLE_DAY_S makes a "day", and so
the shortest partition, a few seconds long.
"""
import glob
import json
import os
import re
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

import test_http as th
from harness import OpenTx

SQL_DIR = os.path.join(th.SOURCE_DIR, "sql")
V0_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema_v0")
ROUTE = "/orgs/{org_id}/messages/{message_id}"
READ = "read-" + uuid.uuid4().hex


def with_db(url, name):
    return url.rsplit("/", 1)[0] + "/" + name


class Db:
    """A database of the test's own, made with the given sql/ files."""

    def __init__(self, files):
        self.name = "lc_" + uuid.uuid4().hex[:10]
        th.psql(f"CREATE DATABASE {self.name} OWNER poold")
        self.url = with_db(th.DATABASE_URL, self.name)
        self.admin = with_db(th.ADMIN_URL, self.name)
        self.apply(files)

    def apply(self, files):
        env = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
        for f in files:
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                            self.url, "-f", f], env=env, check=True,
                           capture_output=True, timeout=60)

    def sql(self, q):
        out = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d",
             self.admin, "-c", q], capture_output=True, text=True, timeout=30,
            check=True)
        return out.stdout.strip()

    def drop(self):
        th.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def sql_files(d):
    return sorted(glob.glob(os.path.join(d, "*.sql")))


def new_sql():
    """Today's sql/ without the demo orgs."""
    return [f for f in sql_files(SQL_DIR) if "demo" not in f]


def msg_path(org, mid):
    return "/orgs/%s/messages/%s" % (org, urllib.parse.quote(mid, safe=""))


class Base(unittest.TestCase):
    ORG = "lc_org"

    def setUp(self):
        self.servers = []
        self.dbs = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        for d in self.dbs:
            d.drop()

    def make_db(self, files=None):
        db = Db(new_sql() if files is None else files)
        self.dbs.append(db)
        return db

    def add_org(self, db, org=None, rules="[]"):
        db.sql("INSERT INTO orgs (org_id, config) VALUES ('%s', '{\"rules\": %s}')"
               % (org or self.ORG, rules))

    def poold(self, db, **env):
        e = {"DATABASE_URL": db.url, "POOLD_DB_MIN_IDLE": "1"}
        e.update({k: str(v) for k, v in env.items()})
        s = th.Poold(env=e)
        self.servers.append(s)
        return s

    def post(self, s, mid, payload="p", org=None):
        return s.process({"id": mid, "org_id": org or self.ORG,
                          "payload": payload})

    def get_msg(self, s, mid, org=None, **kw):
        return s.get(msg_path(org or self.ORG, mid), route=ROUTE, **kw)


class Boundary(Base):
    """Partitions of a minute (twice the window), the zone (careful path)
    15 s either side of a boundary; statements bounded well inside it."""
    ENV = {"POOLD_LIFECYCLE_DAY_S": 60, "POOLD_DEDUPE_WINDOW_S": 30,
           "POOLD_RETENTION_DAYS": 10, "POOLD_POOL_SIZE": 16,
           "POOLD_DB_MAX_CONNS": 40, "POOLD_STATEMENT_TIMEOUT_MS": 10000,
           "POOLD_ACQUIRE_TIMEOUT_MS": 10000}

    def next_boundary(self, db):
        """(seconds to the end of the partition now falls in, its name)."""
        row = db.sql("SELECT extract(epoch FROM hi - clock_timestamp()),"
                     " relname FROM message_partitions"
                     " WHERE lo <= now() AND hi > now()")
        secs, name = row.split("|")
        return float(secs), name

    def wait_until_before_boundary(self, db, lo, hi):
        """Until the partition now falls in ends in lo..hi seconds; returns
        its name. Waiting for the clock (a minute at most), not for another
        thread."""
        def ready():
            secs, name = self.next_boundary(db)
            return name if lo <= secs <= hi else None
        return th.wait_for(ready, 75, "a partition boundary", interval=0.05)

    def rows(self, db, mid):
        return db.sql("SELECT count(*) FROM processed_messages WHERE org_id ="
                      " '%s' AND message_id = '%s'" % (self.ORG, mid))

    def fire(self, s, mid, n, results):
        def one():
            r = self.post(s, mid)
            results.append((r.status, r.json()))
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        return threads

    def test_sixteen_posts_of_one_id_straddling_a_boundary(self):
        """The first post's statement starts before the boundary and is held
        (its partition locked) until 15 more have started after it: they
        must all answer duplicate, and one row exists, in the earlier
        partition."""
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV)
        mid = "straddle-" + uuid.uuid4().hex[:6]
        prev = self.wait_until_before_boundary(db, 2.5, 4.5)
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-d", db.admin], text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        results = []
        try:
            locker.stdin.write('BEGIN; LOCK TABLE "%s" IN SHARE MODE;'
                               " SELECT 'locked';\n" % prev)
            locker.stdin.flush()
            self.assertEqual(locker.stdout.readline().strip(), "locked")
            first = self.fire(s, mid, 1, results)
            th.wait_for(lambda: db.sql(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND"
                " relation = '\"%s\"'::regclass" % prev) == "1", 10,
                "the first post to wait for its partition")
            th.wait_for(lambda: self.next_boundary(db)[1] != prev, 10,
                        "the boundary to pass")
            rest = self.fire(s, mid, 15, results)
            # Either they wait for the first one's id (the careful path),
            # or they answer while it is held: then the result shows it.
            th.wait_for(lambda: len(results) >= 15 or int(db.sql(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND"
                " locktype = 'advisory'")) >= 1, 10,
                "the later posts to wait for the first one's id or answer")
        finally:
            locker.stdin.write("COMMIT;\n")
            locker.stdin.close()
            locker.wait(10)
        for t in first + rest:
            t.join(30)
        self.assertEqual(len(results), 16, results)
        self.assertEqual([st for st, _ in results], [200] * 16, results)
        dup = sorted(b["duplicate"] for _, b in results)
        self.assertEqual(dup, [False] + [True] * 15, results)
        self.assertEqual(self.rows(db, mid), "1")
        self.assertEqual(db.sql(
            "SELECT tableoid::regclass FROM processed_messages WHERE"
            " message_id = '%s'" % mid), '"%s"' % prev)

    def test_sixteen_concurrent_posts_at_a_boundary_store_one_row(self):
        """16 at once, a few ms before the boundary, over a few rounds:
        one row and one non-duplicate answer each time."""
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV)
        for rnd in range(3):
            mid = "edge-%d-%s" % (rnd, uuid.uuid4().hex[:6])
            results = []
            self.wait_until_before_boundary(db, 0.5, 2.0)
            secs, _ = self.next_boundary(db)
            # To a point of the clock: 0-40 ms before the boundary.
            time.sleep(max(0.0, secs - 0.02 * rnd))
            for t in self.fire(s, mid, 16, results):
                t.join(30)
            self.assertEqual([st for st, _ in results], [200] * 16, results)
            self.assertEqual(sum(not b["duplicate"] for _, b in results), 1,
                             results)
            self.assertEqual(self.rows(db, mid), "1")
            # The next round waits for the following boundary.
            th.wait_for(lambda: self.next_boundary(db)[0] > 5, 10,
                        "the boundary to pass")

    def test_an_id_past_the_window_is_processed_again(self):
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV)
        mid = "again-" + uuid.uuid4().hex[:6]
        # A row stored 2 windows ago, as a restore would write it.
        db.sql("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, payload_sha256, processed_at) VALUES ('%s', '%s',"
               " true, 0, sha256('old'), now() - interval '120 seconds')"
               % (self.ORG, mid))
        r = self.post(s, mid, payload="new")
        self.assertEqual(r.status, 200, r.body)
        self.assertFalse(r.json()["duplicate"])
        r = self.post(s, mid, payload="new")
        self.assertTrue(r.json()["duplicate"])
        self.assertEqual(self.rows(db, mid), "2")
        got = self.get_msg(s, mid, token=th.TOKEN)
        self.assertEqual(got.status, 200, got.body)


class Paths(Base):
    """The commit's three dedupe paths, by where now falls in its partition:
    a 10 s window, partitions twice as long (20 s), a zone of 5 s. Seconds
    from the partition's start: 0-5 careful (locks), 5-10 probe (the
    window reaches into the partition before), 10-15 fast (no probe: the
    window starts inside this partition), 15-20 careful."""
    ENV = {"POOLD_LIFECYCLE_DAY_S": 10, "POOLD_DEDUPE_WINDOW_S": 10,
           "POOLD_RETENTION_DAYS": 3}

    def wait_into_partition(self, db, lo, hi):
        """Until now is lo..hi seconds into its partition; returns the
        partition's start (SQL text). Waiting for the clock (20 s at most),
        not for another thread."""
        def ready():
            row = db.sql("SELECT extract(epoch FROM now() - lo), lo FROM"
                         " message_partitions WHERE lo <= now() AND"
                         " hi > now()")
            if not row:
                return None
            secs, start = row.split("|")
            return start if lo <= float(secs) <= hi else None
        return th.wait_for(ready, 30, "a point in the partition",
                           interval=0.05)

    def store(self, db, mid, at, payload="p"):
        """A row as an earlier statement (or a restore) would have written
        it, processed at the SQL expression at."""
        db.sql("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, payload_sha256, processed_at) VALUES ('%s', '%s',"
               " true, 0, sha256('%s'), %s)" % (self.ORG, mid, payload, at))

    def rows(self, db, mid):
        return db.sql("SELECT count(*) FROM processed_messages WHERE org_id ="
                      " '%s' AND message_id = '%s'" % (self.ORG, mid))

    def assert_copied(self, db, s, prefix):
        """A batch of 70 new ids: stored, and by a COPY."""
        t0 = db.sql("SELECT now()")
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG, "messages": [
                {"id": "%s-%d" % (prefix, i), "payload": "p"}
                for i in range(70)]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({m["duplicate"] for m in r.json()["results"]},
                         {False}, r.body)
        self.assertEqual(self.rows(db, prefix + "-69"), "1")
        self.assertNotEqual(db.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname ="
            " current_database() AND query LIKE 'COPY processed_messages%%'"
            " AND query_start >= '%s'" % t0), "0")

    def test_partitions_are_twice_the_window(self):
        db = self.make_db()
        self.add_org(db)
        self.poold(db, **self.ENV)
        self.assertEqual(db.sql(
            "SELECT string_agg(DISTINCT extract(epoch FROM hi - lo)::int::text,"
            " ',') FROM message_partitions"), "20")

    def test_probe_path_sees_the_partition_before(self):
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV)
        tag = uuid.uuid4().hex[:6]
        # Early in the probe path (6-9 s); what depends on the path first.
        lo = self.wait_into_partition(db, 6.0, 6.6)
        # A batch of more than 64 new ids: a look before, then a COPY.
        self.assert_copied(db, s, "probe-" + tag)
        # Half a second before this partition: within the window.
        self.store(db, "prev-" + tag, "'%s'::timestamptz - interval"
                   " '0.5 seconds'" % lo)
        r = self.post(s, "prev-" + tag)
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json()["duplicate"], r.body)
        r = self.post(s, "prev-" + tag, payload="other")
        self.assertEqual((r.status, r.code), (409, "id_conflict"), r.body)
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG, "messages": [
                {"id": "prev-" + tag, "payload": "p"},
                {"id": "new-" + tag, "payload": "p"}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([m["duplicate"] for m in r.json()["results"]],
                         [True, False], r.body)
        self.assertEqual(self.rows(db, "prev-" + tag), "1")
        # A batch of more than 64 goes by COPY after a look at the partition
        # before: it finds the stored id there, and the INSERT answers.
        many = [{"id": "many%d-%s" % (i, tag), "payload": "p"}
                for i in range(69)]
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG,
            "messages": many[:20] + [{"id": "prev-" + tag, "payload": "p"}] +
            many[20:]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([m["duplicate"] for m in r.json()["results"]],
                         [False] * 20 + [True] + [False] * 49, r.body)
        self.assertEqual(self.rows(db, "prev-" + tag), "1")
        self.assertEqual(self.rows(db, "many68-" + tag), "1")

    def test_fast_path_and_an_id_past_the_window_in_its_partition(self):
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV)
        tag = uuid.uuid4().hex[:6]
        # Early in the fast path (11-14 s); what depends on the path first.
        lo = self.wait_into_partition(db, 11.2, 11.8)
        self.assert_copied(db, s, "fast-" + tag)
        # Within the window, in this partition: its key answers.
        self.store(db, "near-" + tag, "now() - interval '9 seconds'")
        # Past the window, in the partition before: processed again.
        self.store(db, "prev-" + tag, "'%s'::timestamptz - interval"
                   " '0.5 seconds'" % lo)
        # Past the window but in this partition, whose key holds it: answered
        # as the stored result (before the partition ends).
        self.store(db, "early-" + tag, "'%s'::timestamptz + interval"
                   " '0.5 seconds'" % lo)
        r = self.post(s, "near-" + tag)
        self.assertTrue(r.json()["duplicate"], r.body)
        r = self.post(s, "near-" + tag, payload="other")
        self.assertEqual((r.status, r.code), (409, "id_conflict"), r.body)
        r = self.post(s, "prev-" + tag)
        self.assertEqual(r.status, 200, r.body)
        self.assertFalse(r.json()["duplicate"], r.body)
        r = self.post(s, "early-" + tag)
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json()["duplicate"], r.body)
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG, "messages": [
                {"id": "early-" + tag, "payload": "p"},
                {"id": "near-" + tag, "payload": "p"},
                {"id": "new-" + tag, "payload": "p"},
                {"id": "new-" + tag, "payload": "p"}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([m["duplicate"] for m in r.json()["results"]],
                         [True, True, False, True], r.body)
        self.assertEqual(self.rows(db, "prev-" + tag), "2")
        self.assertEqual(self.rows(db, "early-" + tag), "1")
        self.assertEqual(self.rows(db, "new-" + tag), "1")
        # A batch of more than 64 goes by COPY: the stored id in this
        # partition fails it whole, and the INSERT answers every message.
        self.store(db, "old-" + tag, "'%s'::timestamptz - interval"
                   " '0.5 seconds'" % lo)
        many = [{"id": "many%d-%s" % (i, tag), "payload": "p"}
                for i in range(68)]
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG,
            "messages": [{"id": "near-" + tag, "payload": "p"}] + many +
            [{"id": "old-" + tag, "payload": "p"}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([m["duplicate"] for m in r.json()["results"]],
                         [True] + [False] * 69, r.body)
        self.assertEqual(self.rows(db, "near-" + tag), "1")
        self.assertEqual(self.rows(db, "old-" + tag), "2")
        self.assertEqual(self.rows(db, "many67-" + tag), "1")


class Retention(Base):
    """Compressed time: a 'day' of 10 s, 2 days of retention, a 5 s
    window: partitions of 10 s, maintained every 2.5 s."""
    ENV = {"POOLD_LIFECYCLE_DAY_S": 10, "POOLD_DEDUPE_WINDOW_S": 5,
           "POOLD_RETENTION_DAYS": 2}
    RETENTION_S, PERIOD_S, AHEAD = 20, 10, 2

    def test_whole_partitions_go_and_the_table_stays_bounded(self):
        db = self.make_db()
        self.add_org(db)
        # Restored rows: one older than any partition and the retention,
        # one from before the first partition but within the retention.
        db.sql("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, payload_sha256, processed_at) VALUES"
               " ('%s', 'restored-old', true, 0, sha256('x'), now() -"
               " interval '1 day'), ('%s', 'restored-new', true, 0,"
               " sha256('x'), now() - interval '5 seconds')"
               % (self.ORG, self.ORG))
        s = self.poold(db, **self.ENV)
        first = ["early-%d" % i for i in range(50)]
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG,
            "messages": [{"id": m, "payload": "p"} for m in first]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get_msg(s, "early-7", token=th.TOKEN).status,
                         200)
        bound = self.RETENTION_S + self.PERIOD_S + 2.5 + 5
        start = time.monotonic()
        n, parts_max, ages = 0, 0, []
        while time.monotonic() - start < 50:
            batch = [{"id": "w-%d" % (n + i), "payload": "p"}
                     for i in range(100)]
            n += 100
            r = s.request("POST", "/process/batch",
                          body={"org_id": self.ORG, "messages": batch})
            self.assertEqual(r.status, 200, r.body)
            parts, age = db.sql(
                "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent ="
                " 'processed_messages'::regclass), coalesce(extract(epoch"
                " FROM now() - min(processed_at)), 0) FROM processed_messages"
            ).split("|")
            parts_max = max(parts_max, int(parts))
            ages.append(float(age))
            time.sleep(0.5)  # the writer's pace, not a synchronisation
        # Range partitions: those not yet past the retention (at most
        # (retention + period) / period + 1), the one now is in, the ones
        # made ahead; and the default one.
        self.assertLessEqual(
            parts_max,
            (self.RETENTION_S + self.PERIOD_S) // self.PERIOD_S + 1 +
            self.AHEAD + 1 + 1)
        # The oldest row never outlives retention + a partition + a round.
        self.assertLessEqual(max(ages[-20:]), bound, ages)
        self.assertEqual(self.get_msg(s, "early-7", token=th.TOKEN).code,
                         "not_found")
        th.wait_for(lambda: db.sql(
            "SELECT count(*) FROM processed_messages WHERE message_id LIKE"
            " 'restored-%'") == "0", 10, "the restored rows to expire")
        self.assertIn('message partitions maintained', s.logtext())
        self.assertRegex(s.logtext(), r'dropped="[1-9]')


    def test_a_long_reader_stalls_writers_briefly(self):
        """A long reader of the table (a pg_dump) keeps an expired
        partition from being dropped: each round gives up after its 200 ms
        lock_timeout, and the writers queued behind it wait that long at
        most (5 s each round once). Once the reader is done, it goes."""
        db = self.make_db()
        self.add_org(db)
        # One 'day' of retention: the first partition is due sooner.
        retention_s = self.RETENTION_S // 2
        s = self.poold(db, **dict(self.ENV, POOLD_RETENTION_DAYS=1))
        self.assertEqual(self.post(s, "before-reader").status, 200)
        reader = subprocess.Popen(
            ["psql", "-X", "-q", "-d", db.admin, "-c", "BEGIN", "-c",
             "SELECT count(*) FROM processed_messages", "-c",
             "SELECT pg_sleep(120)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            th.wait_for(lambda: db.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE"
                " 'SELECT pg_sleep(120)%'") == "1", 10, "the reader")
            took, n = [], 0
            start = time.monotonic()
            failed = "data lifecycle step failed, will retry"
            # Past the retention and a period the first partition is due;
            # write on until two rounds have given up behind the reader.
            while (s.logtext().count(failed) < 2 and
                   time.monotonic() - start < (retention_s +
                                               2 * self.PERIOD_S + 5)):
                t0 = time.monotonic()
                self.assertEqual(self.post(s, "w-%d" % n).status, 200)
                took.append(time.monotonic() - t0)
                n += 1
                time.sleep(0.1)  # the writer's pace, not a synchronisation
            self.assertGreaterEqual(s.logtext().count(failed), 2)
            self.assertLess(max(took), 1.5, sorted(took)[-5:])
        finally:
            reader.kill()
            reader.wait()
            db.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE query LIKE 'SELECT pg_sleep(120)%'")
        th.wait_for(lambda: re.search(r'dropped="[1-9]', s.logtext()), 30,
                    "the expired partition to go once the reader is done")


class RoundAgainstWriters(Base):
    def test_a_row_written_to_the_default_during_a_round_moves_in(self):
        """With no partition for now (a first round that failed, a replica
        whose round found another's running), writes go to the default
        partition, and the round that makes the partition moves them in.
        A row committed while the round waited for the default's writers
        moves too: ATTACH found it left behind and failed the round (and
        every retry under steady writes, leaving rows in the default and
        retention undone). A try that gives up on its 200 ms lock_timeout
        is tried again, as poold does."""
        db = self.make_db()
        self.assertEqual(db.sql("SELECT count(*) FROM message_partitions"),
                         "0")
        for attempt in range(5):
            mid = "m%d" % attempt
            writer = OpenTx(db.admin)
            self.addCleanup(writer.end)
            writer.begin("INSERT INTO processed_messages (org_id, message_id,"
                         " passed, checks, payload_sha256) VALUES ('lc_w',"
                         " '%s', true, 0, '\\x00'); SELECT 1;" % mid)
            round_ = subprocess.Popen(
                ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d",
                 db.admin, "-c", "SELECT created FROM"
                 " poold_lifecycle_maintain(86400, 0, 3600, 60, 1)"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            th.wait_for(lambda: round_.poll() is not None or db.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <>"
                " pg_backend_pid() AND wait_event_type = 'Lock' AND query"
                " LIKE '%poold_lifecycle_maintain%'") == "1", 20,
                "the round to wait for the writer")
            writer.end("COMMIT")
            out, err = round_.communicate(timeout=30)
            self.assertNotIn("would be violated", err)
            if round_.returncode == 0:
                break
            self.assertIn("lock timeout", err)  # too slow a COMMIT: again
        self.assertEqual(round_.returncode, 0, err)
        self.assertGreaterEqual(int(out), 1)  # today's (and tomorrow's)
        self.assertEqual(db.sql(
            "SELECT count(*) FROM processed_messages_default"), "0")
        self.assertEqual(db.sql(
            "SELECT count(*) FROM processed_messages WHERE org_id = 'lc_w'"),
            str(attempt + 1))


class AuditRetention(Base):
    """POOLD_AUDIT_RETENTION_DAYS: the audit log is pruned, oldest first,
    at start-up and with every lifecycle round; 0 keeps it all. A 'day'
    of 10 s, 2 days: entries older than 20 s go."""
    N_OLD = 2 * 5000 + 7  # three statements of CATALOG_AUDIT_BATCH
    ENV = {"POOLD_LIFECYCLE_DAY_S": 10, "POOLD_DEDUPE_WINDOW_S": 5,
           "POOLD_RETENTION_DAYS": 2}

    def seed_audit(self, db):
        db.sql("INSERT INTO audit_log (at, actor, action, org_id) SELECT"
               " now() - interval '1 hour' - i * interval '1 second',"
               " '{\"scope\": \"admin\"}', 'org.put', 'old' FROM"
               " generate_series(1, %d) i" % self.N_OLD)
        db.sql("INSERT INTO audit_log (at, actor, action, org_id) VALUES"
               " (now() - interval '5 seconds', '{}', 'org.put', 'recent')")

    def count(self, db, org):
        return int(db.sql("SELECT count(*) FROM audit_log WHERE org_id = '%s'"
                          % org))

    def test_old_entries_go_recent_ones_stay(self):
        db = self.make_db()
        self.add_org(db)
        self.seed_audit(db)
        s = self.poold(db, **self.ENV, POOLD_AUDIT_RETENTION_DAYS=2)
        th.wait_for(lambda: self.count(db, "old") == 0, 15,
                    "the old audit entries to be deleted")
        self.assertEqual(self.count(db, "recent"), 1)
        self.assertIn('audit entries past their retention deleted '
                      'deleted="%d"' % self.N_OLD, s.logtext())
        # An admin write still leaves its entry, readable through /audit.
        r = s.request("PUT", "/pools/%s/size" % self.ORG, body={"max_size": 3},
                      token=th.TOKEN)
        self.assertEqual(r.status, 200, r.body)
        r = s.get("/audit?org_id=%s" % self.ORG, token=th.TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([e["action"] for e in r.json()["entries"]],
                         ["pool.resize"])

    def test_a_round_held_by_a_lock_does_not_hold_up_the_lease(self):
        """The round runs on a thread and a connection of its own: its
        delete waiting on a lock another session holds (up to the 30 s
        statement timeout here) does not keep the tick from renewing the
        replica's lease. Before, the tick ran the round and the replica
        fenced itself 3.5 s later: no connections, requests refused."""
        db = self.make_db()
        self.add_org(db)
        s = self.poold(db, **self.ENV, POOLD_AUDIT_RETENTION_DAYS=2,
                       POOLD_CLUSTER_MAX_CONNS=4,
                       POOLD_STATEMENT_TIMEOUT_MS=30000)
        th.wait_for(lambda: s.get("/readyz").status == 200, 20, "ready")
        # Old entries, and the table locked against the round's delete
        # until they are committed.
        holder = OpenTx(db.admin)
        self.addCleanup(holder.end)
        self.assertEqual(holder.begin(
            "LOCK TABLE audit_log IN SHARE MODE; INSERT INTO audit_log"
            " (at, actor, action, org_id) SELECT now() - interval '1 hour',"
            " '{}', 'org.put', 'old' FROM generate_series(1, 10);"
            " SELECT 'held';"), "held")
        th.wait_for(lambda: db.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name"
            " LIKE 'poold%' AND wait_event_type = 'Lock' AND query LIKE"
            " 'DELETE FROM audit_log%'") == "1", 15,
            "the round to wait on the held rows")
        start, n = time.monotonic(), 0
        try:
            # Past half the lease (3.5 s), when the tick would have fenced.
            while time.monotonic() - start < 6:
                self.assertEqual(self.post(s, "held-%d" % n).status, 200)
                n += 1
                time.sleep(0.2)  # the writer's pace, not a synchronisation
            self.assertEqual(s.get("/readyz").status, 200)
            self.assertNotIn("cluster lease not renewed", s.logtext())
        finally:
            holder.end("COMMIT")
        th.wait_for(lambda: self.count(db, "old") == 0, 15,
                    "the old audit entries to go once the table is free")

    def test_zero_keeps_every_entry(self):
        db = self.make_db()
        self.add_org(db)
        self.seed_audit(db)
        s = self.poold(db, **self.ENV, POOLD_AUDIT_RETENTION_DAYS=0)
        # A round logs its partitions before it prunes: the second such
        # line (a partition made every 10 s) follows a whole round.
        th.wait_for(lambda: s.logtext().count("message partitions maintained")
                    >= 2, 30, "two lifecycle rounds")
        self.assertEqual(self.count(db, "old"), self.N_OLD)
        self.assertNotIn("audit entries past", s.logtext())


class ReadEndpoint(Base):
    """GET /orgs/{org_id}/messages/{message_id}: who may read, what is
    answered."""

    def test_get_auth_validation_and_retention(self):
        db = self.make_db()
        self.add_org(db)
        self.add_org(db, "lc_other")
        s = self.poold(db, POOLD_CLIENT_AUTH="keys", POOLD_READ_TOKEN=READ)
        keys = {}
        for org in (self.ORG, "lc_other"):
            r = s.request("POST", "/orgs/%s/keys" % org, body={},
                          token=th.TOKEN)
            self.assertEqual(r.status, 201, r.body)
            keys[org] = r.json()["key"]
        mid = "m" * 128  # the longest id, whole through the path
        r = s.process({"id": mid, "org_id": self.ORG, "payload": "p"},
                      token=keys[self.ORG])
        self.assertEqual(r.status, 200, r.body)
        posted = r.json()
        for tok in (keys[self.ORG], READ, th.TOKEN):
            got = self.get_msg(s, mid, token=tok)
            self.assertEqual(got.status, 200, got.body)
            body = got.json()
            self.assertEqual(
                {k: body[k] for k in ("org_id", "message_id", "passed",
                                      "details")},
                {k: posted[k] for k in ("org_id", "message_id", "passed",
                                        "details")})
            self.assertRegex(body["processed_at"],
                             r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(self.get_msg(s, mid).status, 401)
        self.assertEqual(self.get_msg(s, mid, token="nope").status, 401)
        self.assertEqual(
            self.get_msg(s, mid, token=keys["lc_other"]).code, "forbidden")
        self.assertEqual(self.get_msg(s, "nosuch", token=READ).code,
                         "not_found")
        slashed = "a/b c/%41?é"  # the rest of the path is the id, decoded
        r = s.process({"id": slashed, "org_id": self.ORG, "payload": "p"},
                      token=keys[self.ORG])
        self.assertEqual(r.status, 200, r.body)
        got = self.get_msg(s, slashed, token=READ)
        self.assertEqual(got.status, 200, got.body)
        self.assertEqual(got.json()["message_id"], slashed)
        for bad in ("m" * 129, "a\x01b", "a\x7fb"):
            got = self.get_msg(s, bad, token=READ)
            self.assertEqual((got.status, got.code), (400, "invalid_message"),
                             bad)
        got = s.get("/orgs/%s/messages/%%FF" % self.ORG, token=READ)
        self.assertEqual(got.code, "invalid_message")
        got = s.get(msg_path("bad!org", "x"), token=READ)
        self.assertEqual(got.code, "invalid_org_id")
        # Past the retention (30 days) is 404 even while its rows are kept;
        # within it, a restored row is found.
        db.sql("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, payload_sha256, processed_at) VALUES"
               " ('%s', 'ancient', true, 0, sha256('x'), now() - interval"
               " '31 days'), ('%s', 'restored', false, 2, sha256('x'),"
               " now() - interval '29 days')" % (self.ORG, self.ORG))
        self.assertEqual(self.get_msg(s, "ancient", token=READ).code,
                         "not_found")
        got = self.get_msg(s, "restored", token=READ)
        self.assertEqual(got.status, 200, got.body)
        self.assertEqual(got.json()["details"], {"checks": 2, "failed": []})


class Migration(Base):
    """A database made by the previous schema (schema_v0/, a plain
    processed_messages), with rows, then today's sql/ applied over it."""

    def test_rows_kept_readable_and_still_deduplicated(self):
        db = self.make_db(sql_files(V0_DIR))
        self.assertEqual(db.sql("SELECT relkind FROM pg_class WHERE oid ="
                                " 'processed_messages'::regclass"), "r")
        self.add_org(db)
        db.sql("INSERT INTO processed_messages (org_id, message_id, passed,"
               " checks, failed_rules, payload_sha256, processed_at)"
               " SELECT '%s', 'old-' || g, g %% 2 = 0, 1,"
               " CASE WHEN g %% 2 = 0 THEN '{}'::text[] ELSE '{id_prefix}'::text[] END,"
               " sha256(convert_to('p' || g, 'UTF8')),"
               " now() - g * interval '1 minute'"
               " FROM generate_series(1, 300) g" % self.ORG)
        db.apply(new_sql())
        db.apply(new_sql())  # safe twice
        self.assertEqual(db.sql("SELECT relkind FROM pg_class WHERE oid ="
                                " 'processed_messages'::regclass"), "p")
        s = self.poold(db)
        self.assertEqual(db.sql("SELECT count(*) FROM processed_messages"),
                         "300")
        got = self.get_msg(s, "old-3", token=th.TOKEN)
        self.assertEqual(got.status, 200, got.body)
        self.assertEqual(got.json()["details"],
                         {"checks": 1, "failed": ["id_prefix"]})
        r = self.post(s, "old-4", payload="p4")
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json()["duplicate"])
        self.assertEqual(self.post(s, "old-4", payload="other").code,
                         "id_conflict")
        r = s.request("POST", "/process/batch", body={
            "org_id": self.ORG, "messages": [
                {"id": "old-10", "payload": "p10"},
                {"id": "brand-new", "payload": "n"}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([e.get("duplicate") for e in r.json()["results"]],
                         [True, False])
        self.assertEqual(db.sql("SELECT count(*) FROM processed_messages"),
                         "301")
        self.assertNotEqual(db.sql(
            "SELECT tableoid::regclass FROM processed_messages WHERE"
            " message_id = 'brand-new'"), "processed_messages_legacy")


def setUpModule():
    for name in ("POOLD_BIN", "DATABASE_URL", "POOLD_TEST_ADMIN_URL"):
        if not os.environ.get(name):
            raise unittest.SkipTest(name + " is not set")


if __name__ == "__main__":
    unittest.main()
