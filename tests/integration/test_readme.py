"""The README's curl examples, run as written against the real server.

Keeps the README true: every curl command of its "Using it" section runs
(with the test server's port and token substituted) and answers what the
README says it answers.
"""
import json
import os
import re
import subprocess
import unittest

from harness import SOURCE_DIR, TOKEN, Poold, pg, psql, require_env

README = os.path.join(SOURCE_DIR, "README.md")


def sh_block(title):
    """The first sh block of the README section with this title."""
    text = open(README).read()
    section = text.split("## " + title, 1)[1].split("\n## ", 1)[0]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def curl_commands():
    """The curl commands of the README's "Using it" section, joined."""
    joined = sh_block("Using it").replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip().startswith("curl ")]


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
             "AND message_id = 'msg_000123'")

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
