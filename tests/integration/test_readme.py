"""The README's curl examples, run as written against the real server.

Keeps the README true: every curl command of its "Using it" section runs
(with the test server's port and token substituted) and answers what the
README says it answers.
"""
import os
import re
import subprocess
import unittest

from test_faults import TOKEN, Poold, psql, pg

README = os.path.join(os.environ["POOLD_SOURCE_DIR"], "README.md")


def curl_commands():
    """The curl commands of the README's "Using it" section, joined."""
    text = open(README).read()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip().startswith("curl ")]


class ReadmeExamples(unittest.TestCase):

    def setUp(self):
        pg("start")
        psql("DELETE FROM processed_messages WHERE org_id = 'org_001' "
             "AND message_id = 'msg_000123'")
        self.server = Poold()

    def tearDown(self):
        self.assertEqual(self.server.stop(), 0)
        psql("UPDATE orgs SET pool_max_size = NULL WHERE org_id = 'org_001'")
        psql("DELETE FROM processed_messages WHERE org_id = 'org_001' "
             "AND message_id = 'msg_000123'")

    def run_curl(self, cmd):
        cmd = cmd.replace("localhost:8080", "localhost:%d" % self.server.port)
        out = subprocess.run(["bash", "-c", cmd], capture_output=True,
                             text=True, timeout=30,
                             env=dict(os.environ, TOKEN=TOKEN))
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


if __name__ == "__main__":
    unittest.main()
