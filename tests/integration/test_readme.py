"""The README's commands, run as written against the real server.

Keeps the README true and short: every curl command of its "Using it",
"Batches" and "Onboarding a tenant" sections runs (with the test server's
port and token substituted) and answers what the README says it answers;
its first block is the two commands, as a root shell without sudo runs
them; and it stays within README_MAX_LINES (the rest is in docs/).
"""
import json
import os
import re
import subprocess
import unittest

from harness import SOURCE_DIR, TOKEN, Poold, pg, psql, require_env

README = os.path.join(SOURCE_DIR, "README.md")
README_MAX_LINES = 300


def sh_block(title, index=0):
    """The sh block (the first, or the index-th) of the README section with
    this title."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## " + title, 1)[1].split("\n## ", 1)[0]
    return section.split("```sh")[1 + index].split("```", 1)[0]


def curl_commands(title="Using it", index=0):
    """The curl commands of a README section's sh block, each joined into
    one line."""
    joined = re.sub(r"\\\n\s*|\n(?=\s+\S)", " ", sh_block(title, index))
    return [line.strip() for line in joined.splitlines()
            if line.strip().startswith("curl ")]


class ReadmeShape(unittest.TestCase):
    """No server needed."""

    def test_readme_is_at_most_300_lines(self):
        with open(README, encoding="utf-8") as f:
            n = len(f.read().splitlines())
        self.assertLessEqual(n, README_MAX_LINES,
                             "README.md has %d lines: move detail to docs/"
                             % n)

    def test_first_block_is_the_two_commands_for_a_root_shell(self):
        """A root shell without sudo (a fresh server, a container) runs the
        README's first block as written: two scripts of the repository,
        no sudo in front, and no script calls sudo when it is root
        (install-deps.sh sets SUDO only when id -u is not 0)."""
        with open(README, encoding="utf-8") as f:
            first = f.read().split("```sh", 1)[1].split("```", 1)[0]
        self.assertEqual(first, sh_block("Two commands"))
        cmds = [line.split("#", 1)[0].split() for line in first.splitlines()
                if line.strip()]
        self.assertEqual([c[0] for c in cmds],
                         ["scripts/run.sh", "scripts/test.sh"])
        for c in cmds:
            path = os.path.join(SOURCE_DIR, c[0])
            self.assertTrue(os.access(path, os.X_OK), path)
        scripts = os.path.join(SOURCE_DIR, "scripts")
        for name in os.listdir(scripts):
            with open(os.path.join(scripts, name), encoding="utf-8") as f:
                for line in f:
                    code = line.split("#", 1)[0]
                    if re.search(r"\bsudo\b", code):
                        self.assertIn("SUDO=sudo", code,
                                      "%s calls sudo: %s" % (name, line))


def setUpModule():
    require_env("POOLD_TEST_PG_DIR", "POOLD_TEST_PG_PORT")


class ReadmeExamples(unittest.TestCase):

    def setUp(self):
        pg("start")
        psql("DELETE FROM processed_messages WHERE org_id = 'org_001' "
             "AND message_id = 'msg_000123'")
        self.clean_acme()
        # The README documents the default: org API keys on.
        self.server = Poold(env={"POOLD_CLIENT_AUTH": "keys"})
        r = self.server.request("POST", "/orgs/org_001/keys", token=TOKEN,
                                body={"label": "readme test"})
        self.assertEqual(r.status, 201, r.body)
        self.key = r.json()["key"]

    @staticmethod
    def clean_acme():
        psql("DELETE FROM processed_messages WHERE org_id = 'acme';"
             "DELETE FROM org_keys WHERE org_id = 'acme' OR label ="
             " 'readme test';"
             "DELETE FROM audit_log WHERE org_id = 'acme';"
             "DELETE FROM orgs WHERE org_id = 'acme'")

    def tearDown(self):
        self.assertEqual(self.server.stop(), 0)
        self.clean_acme()
        psql("UPDATE orgs SET pool_max_size = NULL WHERE org_id = 'org_001'")
        psql("DELETE FROM processed_messages WHERE org_id = 'org_001' "
             "AND message_id IN ('msg_000123', 'b1', 'b2')")

    def run_curl(self, cmd):
        cmd = cmd.replace("localhost:8080", "localhost:%d" % self.server.port)
        out = subprocess.run(["bash", "-c", cmd], capture_output=True,
                             text=True, timeout=30,
                             env=dict(os.environ, TOKEN=TOKEN, KEY=self.key))
        self.assertEqual(out.returncode, 0, cmd + "\n" + out.stderr)
        return out.stdout

    def test_every_curl_example_answers_as_documented(self):
        cmds = curl_commands()
        self.assertEqual(len(cmds), 9, cmds)
        outs = [self.run_curl(c) for c in cmds]
        first, again, conflict, stats, pool, resize, metrics, health, \
            ready = outs
        self.assertIn('"failed":["min_payload_bytes"]', first)
        self.assertIn('"duplicate":false', first)
        self.assertIn('"duplicate":true', again)
        self.assertIn('"id_conflict"', conflict)
        self.assertIn('"pools"', stats)
        self.assertIn('"connections"', stats)
        self.assertRegex(pool, r'"max_size":\d+')
        self.assertIn('"max_size":8', resize)
        self.assertTrue(re.search(r"^poold_\w+", metrics, re.M), metrics)
        self.assertIn('"status":"ok"', health)
        self.assertIn('"status"', ready)

    def test_lookup_example_settles_a_message(self):
        """The README's answer to a 504: ask for the message."""
        self.run_curl(curl_commands()[0])  # the message, processed
        cmds = curl_commands("Using it", 1)
        self.assertEqual(len(cmds), 1, cmds)
        out = self.run_curl(cmds[0])
        self.assertIn('"message_id":"msg_000123"', out)
        self.assertIn('"failed":["min_payload_bytes"]', out)
        self.assertIn('"processed_at"', out)

    def test_batch_example_answers_as_documented(self):
        psql("DELETE FROM processed_messages WHERE org_id = 'org_001' "
             "AND message_id IN ('b1', 'b2')")
        cmds = curl_commands("Batches")
        self.assertEqual(len(cmds), 1, cmds)
        results = json.loads(self.run_curl(cmds[0]))["results"]
        self.assertEqual([r["message_id"] for r in results],
                         ["b1", "b2", "b1"])
        self.assertEqual([r["duplicate"] for r in results],
                         [False, False, True])
        self.assertEqual(psql("SELECT count(*) FROM processed_messages WHERE "
                              "org_id = 'org_001' AND message_id IN "
                              "('b1', 'b2')"), "2")

    def test_onboarding_a_tenant_works_as_written(self):
        script = sh_block("Onboarding a tenant").replace(
            "localhost:8080", "localhost:%d" % self.server.port)
        script = script.replace("TOKEN=$(cat build/admin-token)", "")
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, TOKEN=TOKEN))
        self.assertEqual(out.returncode, 0, out.stderr + out.stdout)
        lines = out.stdout.splitlines()
        self.assertIn('"org_id":"acme"', lines[0])        # created
        self.assertIn('"rps":50', lines[0])
        self.assertIn('"message_id":"m1"', lines[1])      # old key works
        self.assertIn('"message_id":"m2"', lines[2])      # new key works
        self.assertEqual(lines[3], "204")                 # old revoked
        self.assertIn('"unauthorized"', lines[4])         # and refused
        self.assertIn('"paused":false', lines[5])
        keys = json.loads(lines[6])["keys"]
        self.assertEqual([k["label"] for k in keys], ["first", "second"])
        self.assertIsNotNone(keys[0]["revoked_at"])
        self.assertNotIn("pk_", lines[6])                 # never a secret
        audit = [e["action"] for e in json.loads(lines[7])["entries"]]
        self.assertEqual(audit, ["key.revoke", "key.create", "key.create"])
        self.assertEqual(psql("SELECT count(*) FROM processed_messages"
                              " WHERE org_id = 'acme'"), "2")


if __name__ == "__main__":
    unittest.main()
