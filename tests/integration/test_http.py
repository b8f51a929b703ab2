"""test_http.py — poold's HTTP contract (DESIGN.md) against the real binary.

Environment (set by tests/tests.cmake): POOLD_BIN, DATABASE_URL,
POOLD_TEST_ADMIN_URL (superuser, to set up orgs and check rows),
POOLD_SOURCE_DIR (for openapi.yaml). Every org and message this file creates
carries a random prefix and is deleted at the end.
"""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

# The shared harness; these names stay importable from here for suites
# written against test_http (new suites import harness directly).
from harness import (  # noqa: F401  (re-exported)
    ADMIN_URL, BIN, DATABASE_URL, PG_DIR, PG_PORT, SOURCE_DIR, SPEC, TOKEN,
    Poold, Response, check_against_spec, free_port, memory_bytes, pg, psql,
    require_env, resolve, stop_if_running, wait_for)

P = "th" + uuid.uuid4().hex[:8] + "_"  # org / message id prefix

ORG_OK = P + "ok"        # one rule, passes short payloads
ORG_B = P + "b"          # a second healthy org (isolation)
ORG_SLOW = P + "slow"    # saturated in the exhaustion test
ORG_RS = P + "rs"        # resized and restarted
ORG_OFF = P + "off"      # disabled
ORG_BAD = P + "bad"      # unknown rule type
ORG_RULES = P + "rules"  # fails some rules


SERVER = None


def setUpModule():
    global SERVER
    require_env()
    rules = lambda *r: json.dumps({"rules": list(r)}).replace("'", "''")
    psql(f"""INSERT INTO orgs (org_id, enabled, config) VALUES
      ('{ORG_OK}', true, '{rules({"type": "max_payload_bytes", "value": 1024})}'),
      ('{ORG_B}', true, '{rules({"type": "max_payload_bytes", "value": 1024})}'),
      ('{ORG_SLOW}', true, '{rules()}'),
      ('{ORG_RS}', true, '{rules()}'),
      ('{ORG_OFF}', false, '{rules()}'),
      ('{ORG_BAD}', true, '{rules({"type": "no_such_rule", "value": 1})}'),
      ('{ORG_RULES}', true, '{rules({"type": "hex_payload"},
                                    {"type": "id_prefix", "value": "msg_"},
                                    {"type": "min_payload_bytes", "value": 4})}')
    """)
    SERVER = Poold()


def tearDownModule():
    code = SERVER.stop() if SERVER is not None else 0
    if ADMIN_URL:
        psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
             f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")
    if code != 0:
        raise AssertionError("the shared poold exited with %s" % code)


def mid(tag=""):
    return P + tag + uuid.uuid4().hex[:10]


def row(org, msg_id):
    return psql("SELECT passed, checks, array_to_string(failed_rules, ','),"
                " encode(payload_sha256, 'hex') FROM processed_messages"
                f" WHERE org_id = '{org}' AND message_id = '{msg_id}'")


# ---- command line -------------------------------------------------------------

class CommandLine(unittest.TestCase):
    def run_bin(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("POOLD_")}
        e.update(env or {})
        return subprocess.run([BIN, *args], capture_output=True, text=True,
                              env=e, timeout=20)

    def test_help_lists_every_setting_with_defaults(self):
        r = self.run_bin("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--listen", "--database-url", "--admin-token",
                     "--pool-size", "--pool-ceiling", "--acquire-timeout-ms",
                     "--max-waiting", "--db-max-conns", "--conn-ttl-s",
                     "--conn-check-idle-ms", "--prewarm", "--max-body-bytes",
                     "--max-clients", "--client-timeout-s", "--pool-mode",
                     "--build-cost-ms", "--process-cost-ms", "--log-format",
                     "--client-auth", "--read-token"):
            self.assertIn(flag, r.stdout)
        self.assertIn("POOLD_ACQUIRE_TIMEOUT_MS", r.stdout)
        self.assertIn("default: 5000", r.stdout)

    def test_version(self):
        r = self.run_bin("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^poold \d+\.\d+\.\d+\n$")

    def test_invalid_configuration_exits_2_naming_the_setting(self):
        cases = [
            (["--pool-size", "abc"], None, "POOLD_POOL_SIZE"),
            (["--pool-size=0"], None, "POOLD_POOL_SIZE"),
            (["--pool-size=300"], None, "POOLD_POOL_CEILING"),
            (["--listen", "nonsense"], None, "POOLD_LISTEN"),
            (["--listen=127.0.0.1:70000"], None, "POOLD_LISTEN"),
            (["--no-such-flag"], None, "--no-such-flag"),
            (["--log-format=xml"], None, "POOLD_LOG_FORMAT"),
            ([], {"POOLD_ACQUIRE_TIMEOUT_MS": "-5"}, "POOLD_ACQUIRE_TIMEOUT_MS"),
            ([], {"POOLD_POOL_MODE": "maybe"}, "POOLD_POOL_MODE"),
            ([], {"POOLD_PROCESS_COST_MS": "1e400"}, "POOLD_PROCESS_COST_MS"),
        ]
        for args, env, name in cases:
            with self.subTest(args=args, env=env):
                r = self.run_bin(*args, env=env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(name, r.stderr)

    def test_flags_win_over_environment(self):
        # env says 2, the flag 3: the flag wins
        p = Poold("--pool-size", "3", env={"POOLD_POOL_SIZE": "2",
                                           "POOLD_POOL_CEILING": "3"})
        try:
            self.assertEqual(p.pool(ORG_B)["max_size"], 3)
        finally:
            self.assertEqual(p.stop(), 0)

    def test_generated_admin_token_is_logged_once_and_works(self):
        p = Poold(env={"POOLD_ADMIN_TOKEN": ""})
        try:
            found = re.findall(r'admin_token="([0-9a-f]{64})"', p.logtext())
            self.assertEqual(len(found), 1)
            self.assertEqual(p.get("/stats", token=found[0]).status, 200)
            self.assertEqual(p.get("/stats", token=TOKEN).status, 401)
            self.assertEqual(p.logtext().count(found[0]), 1)
        finally:
            self.assertEqual(p.stop(), 0)

    def test_log_level_warn_writes_no_line_per_request(self):
        p = Poold(env={"POOLD_LOG_LEVEL": "warn", "POOLD_ADMIN_TOKEN": "",
                       "POOLD_LISTEN": "127.0.0.1:%d" % free_port()})
        try:
            r = p.process({"id": "lvl-" + uuid.uuid4().hex, "org_id": ORG_B,
                           "payload": "p"})
            self.assertEqual(r.status, 200, r.body)
            rid = r.headers["x-request-id"]
            self.assertEqual(p.get("/nope").status, 404)
            self.assertEqual(p.stop(), 0)  # the log is whole once it exits
            log = p.output
            # A warning still is (the generated token), no info line is.
            self.assertIn("POOLD_ADMIN_TOKEN is not set", log)
            self.assertNotIn(rid, log)
            self.assertNotIn('path="/nope"', log)
            self.assertNotRegex(log, r"(?m)^\S+ info ")
        finally:
            p.stop()

    def test_log_level_error_still_logs_the_generated_token(self):
        # DESIGN.md: a generated token is logged once; no level hides it,
        # or nobody could use the admin endpoints.
        p = Poold(env={"POOLD_LOG_LEVEL": "error", "POOLD_ADMIN_TOKEN": "",
                       "POOLD_LISTEN": "127.0.0.1:%d" % free_port()})
        try:
            found = wait_for(
                lambda: re.findall(r'admin_token="([0-9a-f]{64})"',
                                   p.logtext()), 5, "the token's line")
            self.assertEqual(len(found), 1)
            self.assertEqual(p.get("/stats", token=found[0]).status, 200)
            self.assertEqual(p.stop(), 0)
            # The level still holds for every other line.
            self.assertEqual(p.output.count("\n"), 1, p.output)
        finally:
            p.stop()

    def test_cannot_bind_exits_non_zero(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            r = self.run_bin(env={
                "POOLD_LISTEN": "127.0.0.1:%d" % s.getsockname()[1],
                "DATABASE_URL": DATABASE_URL, "POOLD_ADMIN_TOKEN": TOKEN})
        finally:
            s.close()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot listen", r.stderr)


# ---- health, routing, auth ----------------------------------------------------

class Basics(unittest.TestCase):
    def test_healthz_and_readyz(self):
        r = SERVER.get("/healthz", route="/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
        r = SERVER.get("/readyz", route="/readyz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ready"}))

    def test_request_ids_are_unique(self):
        a = SERVER.get("/healthz").headers["x-request-id"]
        b = SERVER.get("/healthz").headers["x-request-id"]
        self.assertTrue(a and b and a != b)
        self.assertIn('id="%s"' % b, wait_for(
            lambda: 'id="%s"' % b in SERVER.logtext() and SERVER.logtext(),
            5, "the access log line"))

    def test_unknown_routes_are_404_not_found(self):
        for path in ("/", "/nope", "/pools/", "/pools/a/b/c", "/healthz/",
                     "/process/x", "//stats"):
            with self.subTest(path=path):
                r = SERVER.get(path)
                self.assertEqual((r.status, r.code), (404, "not_found"))

    def test_405_with_allow(self):
        cases = [("DELETE", "/stats", "/stats", "GET, HEAD"),
                 ("GET", "/process", "/process", "POST"),
                 ("POST", "/pools/org_1/size", "/pools/{org_id}/size", "PUT"),
                 ("PUT", "/pools/org_1", "/pools/{org_id}", "GET, HEAD"),
                 ("POST", "/healthz", "/healthz", "GET, HEAD")]
        for method, path, route, allow in cases:
            with self.subTest(method=method, path=path):
                r = SERVER.request(method, path, token=TOKEN)
                self.assertEqual(r.status, 405)
                self.assertEqual(r.code, "method_not_allowed")
                self.assertEqual(r.headers["allow"], allow)

    def test_admin_endpoints_need_the_token(self):
        routes = [("GET", "/stats", "/stats", None),
                  ("GET", "/pools/" + ORG_OK, "/pools/{org_id}", None),
                  ("PUT", "/pools/" + ORG_OK + "/size",
                   "/pools/{org_id}/size", {"max_size": 4}),
                  ("GET", "/metrics", "/metrics", None)]
        bad = [{}, {"Authorization": "Bearer wrong"},
               {"Authorization": "Bearer " + TOKEN[:-1]},
               {"Authorization": "Bearer " + TOKEN + "x"},
               {"Authorization": "Basic " + TOKEN},
               {"Authorization": TOKEN}, {"Authorization": "Bearer "}]
        for method, path, route, body in routes:
            for h in bad:
                with self.subTest(path=path, headers=h):
                    r = SERVER.request(method, path, body=body, headers=h,
                                       route=route)
                    self.assertEqual((r.status, r.code), (401, "unauthorized"))
                    self.assertEqual(r.headers["www-authenticate"], "Bearer")
            r = SERVER.request(method, path, body=body, token=TOKEN,
                               route=route)
            self.assertEqual(r.status, 200, r.body)

    def test_public_endpoints_need_no_token(self):
        self.assertEqual(SERVER.get("/healthz", token="wrong").status, 200)


# ---- what the HTTP layer refuses to half-read ---------------------------------

def raw_exchange(data, port=None, timeout=5, first_answer=False):
    """Send raw bytes; return all the server answers until it closes the
    connection (or the timeout: then socket.timeout), or with first_answer
    once the first answer (headers and Content-Length body) is in."""
    s = socket.create_connection(("127.0.0.1", port or SERVER.port),
                                 timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if first_answer and b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out
    finally:
        s.close()


class Hardening(unittest.TestCase):
    def test_percent_encoded_nul_never_cuts_a_value(self):
        # libmicrohttpd decodes %00 and hands C strings over: the value
        # would end at the NUL. poold leaves "%00" as it is.
        r = SERVER.get("/pools/%s%%00zzz" % ORG_OK, token=TOKEN,
                       route="/pools/{org_id}")
        self.assertEqual((r.status, r.code), (400, "invalid_org_id"))
        m = mid("nul")
        self.assertEqual(SERVER.process({"id": m, "org_id": ORG_OK,
                                         "payload": "ab"}).status, 200)
        r = SERVER.get("/orgs/%s/messages/%s%%00zzz" % (ORG_OK, m))
        self.assertEqual((r.status, r.code), (404, "not_found"))
        r = SERVER.get("/orgs?limit=5%00x", token=TOKEN)
        self.assertEqual((r.status, r.code), (400, "invalid_message"), r.body)
        victim = P + "nulvictim"
        psql(f"INSERT INTO orgs (org_id, config) VALUES ('{victim}',"
             " '{\"rules\": []}')")
        r = SERVER.request("DELETE", "/orgs/%s%%00x" % victim, token=TOKEN)
        self.assertEqual((r.status, r.code), (400, "invalid_org_id"))
        self.assertEqual(psql("SELECT enabled FROM orgs WHERE org_id = "
                              f"'{victim}'"), "t")
        # Other escapes are decoded as before, '+' in a query is a space.
        enc = "".join("%%%02X" % ord(c) for c in ORG_OK)
        r = SERVER.get("/pools/" + enc, token=TOKEN, route="/pools/{org_id}")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(SERVER.get("/orgs?limit=%35", token=TOKEN).status,
                         200)
        self.assertEqual(SERVER.get("/orgs?limit=+5", token=TOKEN).status,
                         400)
        self.assertEqual(SERVER.get("/orgs?limit=5%", token=TOKEN).status,
                         400)

    def test_message_ids_with_empty_segments_read_back(self):
        ids = ["/" + mid("es"), mid("es") + "//b", "/", mid("es") + "/"]
        self.addCleanup(psql, "DELETE FROM processed_messages WHERE org_id ="
                        " '%s' AND message_id IN (%s)" % (ORG_OK, ", ".join(
                            "'%s'" % m for m in ids)))
        for m in ids:
            with self.subTest(id=m):
                r = SERVER.process({"id": m, "org_id": ORG_OK,
                                    "payload": "ab"})
                self.assertEqual(r.status, 200, r.body)
                path = "/orgs/%s/messages/%s" % (
                    ORG_OK, urllib.parse.quote(m, safe=""))
                r = SERVER.get(path,
                               route="/orgs/{org_id}/messages/{message_id}")
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["message_id"], m)
        r = SERVER.get("/orgs/%s/messages/" % ORG_OK)
        self.assertEqual((r.status, r.code), (404, "not_found"))

    def test_head_wherever_get(self):
        for path, token in (("/healthz", None), ("/stats", TOKEN),
                            ("/pools/" + ORG_OK, TOKEN)):
            with self.subTest(path=path):
                get = SERVER.get(path, token=token)
                r = SERVER.request("HEAD", path, token=token)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.body, b"")
                self.assertEqual(r.headers["content-type"],
                                 get.headers["content-type"])
        r = SERVER.request("HEAD", "/stats")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.body, b"")
        r = SERVER.request("HEAD", "/process")
        self.assertEqual((r.status, r.headers["allow"]), (405, "POST"))
        r = SERVER.request("POST", "/healthz")
        self.assertEqual(r.headers["allow"], "GET, HEAD")
        r = SERVER.request("POST", "/orgs/" + ORG_OK, token=TOKEN)
        self.assertEqual(r.headers["allow"], "GET, HEAD, PUT, DELETE")
        head = re.compile(r'poold_http_requests_total\{route="/healthz",'
                          r'method="HEAD",status="200"\} [1-9]')
        wait_for(lambda: head.search(
            SERVER.get("/metrics", token=TOKEN).body.decode()), 5,
            "HEAD /healthz counted under its route")

    def test_head_with_the_read_token(self):
        read = "read-" + uuid.uuid4().hex
        p = Poold(env={"POOLD_READ_TOKEN": read})
        try:
            self.assertEqual(p.request("HEAD", "/stats", token=read).status,
                             200)
            r = p.request("PUT", "/pools/%s/size" % ORG_OK, token=read,
                          body={"max_size": 4})
            self.assertEqual((r.status, r.code), (403, "forbidden"))
        finally:
            self.assertEqual(p.stop(), 0)

    def answers(self, out):
        return re.findall(rb"^HTTP/1\.1 (\d{3})", out, re.M)

    def test_conflicting_content_lengths_are_refused_and_closed(self):
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for first, second in ((0, len(smuggled)), (len(smuggled), 0)):
            with self.subTest(first=first, second=second):
                out = raw_exchange(
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                    % (first, second) + smuggled)
                self.assertEqual(self.answers(out), [b"400"], out)
                self.assertIn(b'"code":"bad_request"', out)
                self.assertRegex(out, rb"(?i)\r\nconnection: close\r\n")
        # Both framings at once: refused too (RFC 9112 6.1).
        out = raw_exchange(b"POST /process HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n")
        self.assertEqual(self.answers(out), [b"400"], out)
        # Equal ones are one length.
        msg = json.dumps({"id": mid("cl"), "org_id": ORG_OK,
                          "payload": "ab"}).encode()
        out = raw_exchange(b"POST /process HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\n"
                           b"Content-Length: %d\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n"
                           % (len(msg), len(msg)) + msg)
        self.assertEqual(self.answers(out), [b"200"], out)

    def test_unknown_transfer_coding_is_answered_at_once(self):
        for te in (b"gzip", b"gzip, chunked", b"chunked, gzip"):
            with self.subTest(te=te):
                t0 = time.monotonic()
                out = raw_exchange(b"POST /process HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Transfer-Encoding: " + te +
                                   b"\r\n\r\nabc")
                self.assertEqual(self.answers(out), [b"501"], out)
                self.assertIn(b'"code":"not_implemented"', out)
                self.assertRegex(out, rb"(?i)\r\nconnection: close\r\n")
                self.assertLess(time.monotonic() - t0, 3)
        out = raw_exchange(b"POST /process HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n"
                           b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n")
        self.assertEqual(self.answers(out), [b"501"], out)


# ---- bodies ---------------------------------------------------------------------

class Bodies(unittest.TestCase):
    def raw(self, data, timeout=10):
        return raw_exchange(data, timeout=timeout, first_answer=True)

    def test_413_by_content_length_is_answered_before_the_body(self):
        out = self.raw(b"POST /process HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Content-Length: 100000000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:200])
        self.assertIn(b'"payload_too_large"', out)

    def test_413_by_chunked_body(self):
        big = b"x" * 70000

        def chunks():
            for i in range(0, len(big), 7000):
                yield big[i:i + 7000]
        c = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=20)
        try:
            c.request("POST", "/process", body=chunks(), encode_chunked=True,
                      headers={"Content-Type": "application/json",
                               "Transfer-Encoding": "chunked"})
            r = c.getresponse()
            body = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        self.assertEqual(r.status, 413)
        check_against_spec("/process", "POST", 413, hdrs, body)
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")

    def test_small_chunked_body_and_body_at_the_limit_are_fine(self):
        msg = json.dumps({"id": mid("ch"), "org_id": ORG_OK,
                          "payload": "ab"}).encode()
        c = http.client.HTTPConnection("127.0.0.1", SERVER.port, timeout=20)
        try:
            c.request("POST", "/process", body=iter([msg[:5], msg[5:]]),
                      encode_chunked=True,
                      headers={"Content-Type": "application/json",
                               "Transfer-Encoding": "chunked"})
            r = c.getresponse()
            self.assertEqual(r.status, 200, r.read())
        finally:
            c.close()
        # exactly 65536 bytes passes the size check (then fails on content)
        pad = {"id": mid("lim"), "org_id": ORG_OK, "payload": ""}
        base = len(json.dumps(pad).encode())
        pad["payload"] = "a" * (65536 - base)
        body = json.dumps(pad).encode()
        self.assertEqual(len(body), 65536)
        r = SERVER.request("POST", "/process", body=body,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200)  # rule fails, result still stored
        self.assertFalse(r.json()["passed"])
        r = SERVER.request("POST", "/process", body=body + b" ",
                           headers={"Content-Type": "application/json"},
                           route="/process")
        self.assertEqual(r.status, 413)

    def test_415_unless_json(self):
        msg = json.dumps({"id": mid(), "org_id": ORG_OK, "payload": "ab"})
        for ct in ("text/plain", "application/x-www-form-urlencoded",
                   "application/jsonx", ""):
            with self.subTest(ct=ct):
                r = SERVER.request("POST", "/process", body=msg,
                                   headers={"Content-Type": ct},
                                   route="/process")
                self.assertEqual((r.status, r.code),
                                 (415, "unsupported_media_type"))
        r = SERVER.request("PUT", "/pools/%s/size" % ORG_OK, token=TOKEN,
                           body=b'{"max_size":4}',
                           headers={"Content-Type": "text/plain"},
                           route="/pools/{org_id}/size")
        self.assertEqual(r.status, 415)
        for ct in ("application/json; charset=utf-8", "Application/JSON",
                   None):
            with self.subTest(ct=ct):
                h = {"Content-Type": ct} if ct else {}
                r = SERVER.request("POST", "/process",
                                   body=json.dumps({"id": mid(), "org_id": ORG_OK,
                                                    "payload": "ab"}),
                                   headers=h, route="/process")
                self.assertEqual(r.status, 200, r.body)

    def test_strict_json(self):
        cases = [
            b'{"id":"a","id":"b","org_id":"%s","payload":"x"}',
            b'{"id":"a","org_id":"%s","payload":"x"} {}',
            b'{"id":"a","org_id":"%s","payload":"x"}x',
            b'{"id":"a\\u0000","org_id":"%s","payload":"x"}',
            b'{"id":"a","org_id":"%s","payload":"x\\u0000y"}',
            b'{"id":"a\xff","org_id":"%s","payload":"x"}',
            b'{"id":"a","org_id":"%s","payload":"\xc3\x28"}',
            b'{"id":"a","org_id":"%s","payload":"x"',
            b'', b'   ', b'null', b'[]', b'"%s"', b'42', b'[{"id":"a"}]',
            b'{"id":"a",}',
            # Past a double or a 64-bit integer, even in an ignored member
            # (openapi.yaml, BadRequest).
            b'{"id":"a","org_id":"%s","payload":"x","n":1e400}',
            b'{"id":"a","org_id":"%s","payload":"x","n":99999999999999999999}',
        ]
        for body in cases:
            body = body.replace(b"%s", ORG_OK.encode())
            with self.subTest(body=body):
                r = SERVER.request("POST", "/process", body=body,
                                   headers={"Content-Type": "application/json"},
                                   route="/process")
                self.assertEqual((r.status, r.code), (400, "invalid_json"))

    def test_field_validation(self):
        ok = {"id": mid(), "org_id": ORG_OK, "payload": "ab"}
        cases = [
            ({"org_id": ORG_OK, "payload": "x"}, "invalid_message", "id"),
            (dict(ok, id=5), "invalid_message", "id"),
            (dict(ok, id=""), "invalid_message", "id"),
            (dict(ok, id="x" * 129), "invalid_message", "id"),
            (dict(ok, id="a\nb"), "invalid_message", "id"),
            (dict(ok, id="a\tb"), "invalid_message", "id"),
            (dict(ok, id="a\x7fb"), "invalid_message", "id"),
            (dict(ok, id="a\u0085b"), "invalid_message", "id"),
            (dict(ok, id="é" * 65), "invalid_message", "id"),  # 130 bytes
            ({"id": "a", "payload": "x"}, "invalid_org_id", "org_id"),
            (dict(ok, org_id=7), "invalid_org_id", "org_id"),
            (dict(ok, org_id=""), "invalid_org_id", "org_id"),
            (dict(ok, org_id="a b"), "invalid_org_id", "org_id"),
            (dict(ok, org_id="a/b"), "invalid_org_id", "org_id"),
            (dict(ok, org_id="x" * 65), "invalid_org_id", "org_id"),
            (dict(ok, org_id="é"), "invalid_org_id", "org_id"),
            ({"id": "a", "org_id": ORG_OK}, "invalid_message", "payload"),
            (dict(ok, payload=None), "invalid_message", "payload"),
            (dict(ok, payload=["x"]), "invalid_message", "payload"),
        ]
        for body, code, field in cases:
            with self.subTest(body=body):
                r = SERVER.process(body)
                self.assertEqual((r.status, r.code), (400, code))
                self.assertIn("'%s'" % field, r.json()["error"]["message"])
        # limits that pass, and other members ignored
        for body in (dict(ok, id=mid() + "x" * 100, extra={"a": [1]}),
                     dict(ok, id="é" * 64, org_id=ORG_OK),
                     dict(ok, id=mid(), org_id=ORG_OK, payload="")):
            with self.subTest(body=body):
                r = SERVER.process(body)
                self.assertEqual(r.status, 200, r.body)
        psql(f"DELETE FROM processed_messages WHERE org_id = '{ORG_OK}'"
             " AND message_id = '" + "é" * 64 + "'")


# ---- processing semantics ---------------------------------------------------------

class Processing(unittest.TestCase):
    def test_result_row_duplicate_and_conflict(self):
        msg = {"id": mid("d"), "org_id": ORG_OK, "payload": "cafe"}
        r = SERVER.process(msg)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"org_id": ORG_OK, "message_id": msg["id"],
                                    "passed": True,
                                    "details": {"checks": 1, "failed": []},
                                    "duplicate": False})
        sha = hashlib.sha256(b"cafe").hexdigest()
        self.assertEqual(row(ORG_OK, msg["id"]), "t|1||" + sha)
        r = SERVER.process(msg)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.json()["duplicate"])
        r = SERVER.process(dict(msg, payload="beef"))
        self.assertEqual((r.status, r.code), (409, "id_conflict"))
        self.assertEqual(row(ORG_OK, msg["id"]), "t|1||" + sha)
        self.assertEqual(psql("SELECT count(*) FROM processed_messages WHERE "
                              f"org_id = '{ORG_OK}' AND message_id = "
                              f"'{msg['id']}'"), "1")

    def test_failed_rules_are_reported_in_order(self):
        msg = {"id": mid("r"), "org_id": ORG_RULES, "payload": "xyz"}
        r = SERVER.process(msg)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["details"],
                         {"checks": 3, "failed": ["hex_payload", "id_prefix",
                                                  "min_payload_bytes"]})
        self.assertFalse(r.json()["passed"])
        self.assertEqual(row(ORG_RULES, msg["id"]).split("|")[:3],
                         ["f", "3", "hex_payload,id_prefix,min_payload_bytes"])

    def test_unknown_disabled_and_misconfigured_orgs(self):
        for org, status, code in ((P + "nobody", 404, "unknown_org"),
                                  (ORG_OFF, 404, "unknown_org"),
                                  (ORG_BAD, 503, "org_misconfigured")):
            with self.subTest(org=org):
                msg = {"id": mid(), "org_id": org, "payload": "ab"}
                r = SERVER.process(msg)
                self.assertEqual((r.status, r.code), (status, code))
                self.assertEqual(row(org, msg["id"]), "")
        self.assertIn(ORG_BAD, wait_for(
            lambda: ORG_BAD in SERVER.logtext() and SERVER.logtext(), 5,
            "the misconfiguration in the log"))

    def test_pool_paths_validate_the_org_id(self):
        for path in ("/pools/a%20b", "/pools/" + "x" * 65, "/pools/a.b",
                     "/pools/%C3%A9"):
            with self.subTest(path=path):
                r = SERVER.get(path, token=TOKEN, route="/pools/{org_id}")
                self.assertEqual((r.status, r.code), (400, "invalid_org_id"))
                r = SERVER.request("PUT", path + "/size", token=TOKEN,
                                   body={"max_size": 2},
                                   route="/pools/{org_id}/size")
                self.assertEqual((r.status, r.code), (400, "invalid_org_id"))
        r = SERVER.get("/pools/" + P + "nobody", token=TOKEN,
                       route="/pools/{org_id}")
        self.assertEqual((r.status, r.code), (404, "unknown_org"))

    def test_pool_stats_before_and_after_first_use(self):
        st = SERVER.pool(ORG_B)
        for k in ("max_size", "idle", "active", "waiting", "total_timeouts",
                  "peak_active", "created", "destroyed", "acquired"):
            self.assertIsInstance(st[k], int)
        self.assertEqual(st["max_size"], 4)
        before = st["acquired"]
        self.assertEqual(SERVER.process({"id": mid(), "org_id": ORG_B,
                                         "payload": "ab"}).status, 200)
        st = SERVER.pool(ORG_B)
        self.assertEqual(st["acquired"], before + 1)
        self.assertGreaterEqual(st["created"], 1)
        self.assertEqual(st["active"], 0)

    def test_resize_validation(self):
        path = "/pools/%s/size" % ORG_OK
        for body in (b'{"max_size":0}', b'{"max_size":257}',
                     b'{"max_size":-1}', b'{"max_size":"4"}',
                     b'{"max_size":4.0}', b'{"max_size":true}', b'{}',
                     b'{"size":4}', b'{"max_size":null}'):
            with self.subTest(body=body):
                r = SERVER.request("PUT", path, token=TOKEN, body=body,
                                   headers={"Content-Type": "application/json"},
                                   route="/pools/{org_id}/size")
                self.assertEqual((r.status, r.code), (400, "invalid_size"))
        for body in (b'{"max_size":99999999999999999999999}', b'[4]', b'4',
                     b'{"max_size":4,"max_size":5}'):
            with self.subTest(body=body):
                r = SERVER.request("PUT", path, token=TOKEN, body=body,
                                   headers={"Content-Type": "application/json"},
                                   route="/pools/{org_id}/size")
                self.assertEqual(r.status, 400)
        r = SERVER.request("PUT", "/pools/%s/size" % (P + "nobody"),
                           token=TOKEN, body={"max_size": 2},
                           route="/pools/{org_id}/size")
        self.assertEqual((r.status, r.code), (404, "unknown_org"))

    def test_resize_persists_across_restart(self):
        try:
            p = Poold()
            try:
                r = p.request("PUT", "/pools/%s/size" % ORG_RS, token=TOKEN,
                              body={"max_size": 7},
                              route="/pools/{org_id}/size")
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["max_size"], 7)
                self.assertEqual(p.pool(ORG_RS)["max_size"], 7)
            finally:
                self.assertEqual(p.stop(), 0)
            self.assertEqual(psql("SELECT pool_max_size FROM orgs WHERE "
                                  f"org_id = '{ORG_RS}'"), "7")
            p = Poold()
            try:
                self.assertEqual(p.pool(ORG_RS)["max_size"], 7)
            finally:
                self.assertEqual(p.stop(), 0)
        finally:
            psql(f"UPDATE orgs SET pool_max_size = NULL WHERE org_id = '{ORG_RS}'")


# ---- stats and metrics ----------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


def parse_metrics(text):
    """Check the exposition format; returns {family: type} and samples."""
    types, samples, seen = {}, [], set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            assert name not in types, "family %s twice" % name
            assert typ in ("counter", "gauge", "histogram", "summary"), line
            types[name] = typ
            seen.add(name)
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        fam = fam if fam in types else name
        assert fam in types, "sample %s before its # TYPE" % name
        float(value)
        lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        samples.append((name, lab, float(value)))
    return types, samples


class StatsAndMetrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for _ in range(3):
            assert SERVER.process({"id": mid("m"), "org_id": ORG_OK,
                                   "payload": "ab"}).status == 200

    def test_stats_shape_and_totals(self):
        r = SERVER.get("/stats", token=TOKEN, route="/stats")
        self.assertEqual(r.status, 200)
        s = r.json()
        self.assertIn(ORG_OK, s["pools"])
        for k in ("acquired", "created", "idle", "active", "max_size"):
            self.assertEqual(s["totals"][k],
                             sum(p[k] for p in s["pools"].values()), k)
        self.assertEqual(s["connections"]["max_size"], 32)
        # Only the totals say what the statements took.
        self.assertGreater(s["totals"]["group_commit_ns_sum"], 0)
        self.assertLessEqual(s["totals"]["group_commits_overlapped"],
                             s["totals"]["group_commits"])
        self.assertNotIn("group_commit_ns_sum", s["pools"][ORG_OK])
        self.assertGreaterEqual(s["connections"]["created"], 1)

    def test_metrics_format_and_series(self):
        r = SERVER.get("/metrics", token=TOKEN, route="/metrics")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"],
                         "text/plain; version=0.0.4; charset=utf-8")
        text = r.body.decode()
        types, samples = parse_metrics(text)
        byname = {}
        for name, lab, v in samples:
            byname.setdefault(name, []).append((lab, v))
        for fam in ("poold_pool_max_size", "poold_pool_idle",
                    "poold_pool_active", "poold_pool_waiting",
                    "poold_pool_timeouts_total", "poold_pool_created_total",
                    "poold_pool_acquired_total", "poold_pool_destroyed_total",
                    "poold_pool_peak_active"):
            self.assertIn(fam, types)
            self.assertTrue(any(l.get("org") == ORG_OK for l, _ in byname[fam]),
                            fam)
        for fam in ("poold_db_connections_max_size",
                    "poold_db_connections_active",
                    "poold_db_connections_created_total"):
            self.assertIn(fam, byname)
        self.assertEqual(types["poold_pool_acquire_wait_seconds"], "histogram")
        self.assertEqual(types["poold_http_request_duration_seconds"],
                         "histogram")
        # cumulative buckets, +Inf == _count, per org
        buckets = [(l["le"], v) for l, v in
                   byname["poold_pool_acquire_wait_seconds_bucket"]
                   if l.get("org") == ORG_OK]
        values = [v for _, v in buckets]
        self.assertEqual(values, sorted(values))
        self.assertEqual(buckets[-1][0], "+Inf")
        count = [v for l, v in byname["poold_pool_acquire_wait_seconds_count"]
                 if l.get("org") == ORG_OK]
        self.assertEqual(count, [buckets[-1][1]])
        acquired = [v for l, v in byname["poold_pool_acquired_total"]
                    if l.get("org") == ORG_OK][0]
        self.assertGreaterEqual(acquired, 3)
        # requests by route pattern, never by raw path
        reqs = byname["poold_http_requests_total"]
        self.assertTrue(any(l == {"route": "/process", "method": "POST",
                                  "status": "200"} and v >= 3
                            for l, v in reqs))
        self.assertTrue(any(l["route"] == "/pools/{org_id}" for l, _ in reqs))
        self.assertFalse(any(P in l["route"] for l, _ in reqs))
        self.assertIn("poold_http_request_duration_seconds_count", byname)
        # What the commit queue's statements took: one series each, every
        # request above committed (a statement each, or fewer in groups).
        self.assertEqual(types["poold_group_commit_seconds"], "summary")
        [(_, statements)] = byname["poold_group_commit_seconds_count"]
        [(_, took)] = byname["poold_group_commit_seconds_sum"]
        [(_, overlapped)] = byname["poold_group_commits_overlapped_total"]
        self.assertGreaterEqual(statements, 1)
        self.assertGreater(took, 0)
        self.assertLessEqual(overlapped, statements)


# ---- backpressure and isolation -----------------------------------------------------

class Backpressure(unittest.TestCase):
    def test_exhausted_pool_503_waiter_bound_and_isolation(self):
        # one service per org, each processing holds it 1 s; waiters wait
        # 0.6 s; one waiter at most.
        p = Poold("--pool-size=1", "--process-cost-ms=1000",
                  "--acquire-timeout-ms=600", "--max-waiting=1")
        results = {}

        def send(key, org):
            t0 = time.monotonic()
            r = p.process({"id": mid(key), "org_id": org, "payload": "ab"})
            results[key] = (r, time.monotonic() - t0)

        def start(key, org):
            t = threading.Thread(target=send, args=(key, org))
            t.start()
            return t
        try:
            threads = [start("holder", ORG_SLOW)]
            wait_for(lambda: p.pool(ORG_SLOW)["active"] == 1, 10,
                     "the holder to take the only service")
            threads.append(start("waiter", ORG_SLOW))
            wait_for(lambda: p.pool(ORG_SLOW)["waiting"] == 1, 10,
                     "a waiter")
            # the waiter bound is reached: answered at once
            threads.append(start("rejected", ORG_SLOW))
            # another org is served while ORG_SLOW is saturated
            threads.append(start("other", ORG_B))
            for t in threads:
                t.join(30)
            r, dt = results["rejected"]
            self.assertEqual((r.status, r.code), (503, "pool_exhausted"))
            self.assertLess(dt, 0.5)
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            r, dt = results["waiter"]
            self.assertEqual((r.status, r.code), (503, "pool_exhausted"))
            self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
            self.assertGreater(dt, 0.5)
            self.assertEqual(results["holder"][0].status, 200)
            r, dt = results["other"]
            self.assertEqual(r.status, 200, r.body)
            self.assertLess(dt, 1.0 + 0.8)  # its own processing cost only
            st = p.pool(ORG_SLOW)
            self.assertGreaterEqual(st["total_timeouts"], 1)
            self.assertGreaterEqual(st["waiters_rejected"], 1)
            self.assertEqual(p.pool(ORG_B)["total_timeouts"], 0)
            # nothing was written for the refused requests
            for key in ("waiter", "rejected"):
                self.assertEqual(psql(
                    "SELECT count(*) FROM processed_messages WHERE "
                    f"org_id = '{ORG_SLOW}' AND message_id LIKE '{P}{key}%'"),
                    "0")
        finally:
            self.assertEqual(p.stop(), 0)


# ---- lifecycle ---------------------------------------------------------------------------

class Lifecycle(unittest.TestCase):
    def test_graceful_shutdown_answers_in_flight_requests(self):
        p = Poold("--process-cost-ms=1500", "--pool-size=4")
        ids = [mid("g%d" % i) for i in range(3)]
        results = {}

        def send(i):
            results[i] = p.process({"id": i, "org_id": ORG_OK,
                                    "payload": "ab"})
        keep = http.client.HTTPConnection("127.0.0.1", p.port, timeout=20)
        try:
            self.assertEqual(p.get("/healthz", conn=keep).status, 200)
            threads = [threading.Thread(target=send, args=(i,)) for i in ids]
            for t in threads:
                t.start()
            wait_for(lambda: p.pool(ORG_OK)["active"] == 3, 10,
                     "three requests in flight")
            p.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "shutting down" in p.logtext(), 5, "the drain")
            # readiness turns 503 on a connection opened before the signal
            r = p.get("/readyz", conn=keep, route="/readyz")
            self.assertEqual((r.status, r.code), (503, "shutting_down"))
            for t in threads:
                t.join(20)
            # The drain ends once the last completion callback ran, which
            # is just after the client read its answer.
            wait_for(lambda: "drained" in p.logtext(), 10, "the drain's end")
        finally:
            keep.close()
            log = p.logtext()
            code = p.stop()
        self.assertEqual(code, 0, log)
        for i in ids:
            self.assertEqual(results[i].status, 200)
            self.assertTrue(row(ORG_OK, i).startswith("t|"), i)
        self.assertIn("drained", log)

    def test_starts_with_the_database_down_and_times_out_idle_clients(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        s.close()  # nothing listens there now
        p = Poold("--client-timeout-s=1", wait_ready=False,
                  env={"DATABASE_URL":
                       "postgresql://poold@127.0.0.1:%d/pools"
                       "?connect_timeout=2" % dead})
        try:
            self.assertEqual(p.get("/healthz", route="/healthz").status, 200)
            r = p.get("/readyz", route="/readyz")
            self.assertEqual((r.status, r.code), (503, "database_unavailable"))
            r = p.process({"id": mid(), "org_id": ORG_OK, "payload": "ab"})
            self.assertEqual((r.status, r.code), (503, "database_unavailable"))
            # a client that connects and sends nothing is disconnected
            c = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            t0 = time.monotonic()
            try:
                self.assertEqual(c.recv(1), b"")
            except ConnectionResetError:
                pass
            finally:
                c.close()
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            self.assertEqual(p.stop(), 0)


# ---- batches and group commit ------------------------------------------------

class BatchAndGroupCommit(unittest.TestCase):
    """POST /process/batch (DESIGN.md) and the group commit behind
    POST /process, each against its own server."""

    @classmethod
    def setUpClass(cls):
        cls.server = Poold(env={"POOLD_CLIENT_AUTH": "none",
                                "POOLD_MAX_BATCH": "5",
                                "POOLD_MAX_BATCH_BYTES": "2048"})

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0

    def batch(self, body, **kw):
        return self.server.request("POST", "/process/batch", body=body,
                                   route="/process/batch", **kw)

    def test_results_in_order_with_duplicates_and_conflicts(self):
        a, b, c = mid("ba"), mid("bb"), mid("bc")
        r = self.batch({"org_id": ORG_OK, "messages": [
            {"id": a, "payload": "aa"}, {"id": b, "payload": "bb"},
            {"id": a, "payload": "aa"}, {"id": a, "payload": "zz"}]})
        self.assertEqual(r.status, 200, r.body)
        res = r.json()["results"]
        self.assertEqual([e["message_id"] for e in res], [a, b, a, a])
        self.assertEqual([e.get("duplicate") for e in res[:3]],
                         [False, False, True])
        self.assertEqual(res[3]["error"]["code"], "id_conflict")
        self.assertEqual(row(ORG_OK, a).split("|")[3],
                         hashlib.sha256(b"aa").hexdigest())
        self.assertTrue(row(ORG_OK, b))
        # Again, with a new one: stored results, conflicts, one insert.
        r = self.batch({"org_id": ORG_OK, "messages": [
            {"id": b, "payload": "bb", "org_id": ORG_OK},
            {"id": b, "payload": "xx"}, {"id": c, "payload": "cc"}]})
        self.assertEqual(r.status, 200, r.body)
        res = r.json()["results"]
        self.assertTrue(res[0]["duplicate"])
        self.assertEqual(res[1]["error"]["code"], "id_conflict")
        self.assertFalse(res[2]["duplicate"])
        self.assertTrue(row(ORG_OK, c))
        # The single route sees the batch's rows.
        r = self.server.process({"id": c, "org_id": ORG_OK, "payload": "cc"})
        self.assertEqual((r.status, r.json()["duplicate"]), (200, True))

    def test_a_long_ignored_array_is_not_the_messages(self):
        """Another member's array, longer than POOLD_MAX_BATCH (5) and
        before "messages", is ignored as DESIGN.md says: the in-place
        reader once took it for the list and refused the batch."""
        i = mid("bi")
        r = self.batch({"org_id": ORG_OK, "extra": [{}] * 7,
                        "messages": [{"id": i, "payload": "a"}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["results"][0]["message_id"], i)
        self.assertTrue(row(ORG_OK, i))

    def test_validation_names_the_member_and_writes_nothing(self):
        first = mid("bv")
        cases = [
            ({"org_id": ORG_OK, "messages": [{"id": first, "payload": "a"},
                                             {"id": mid(), "payload": 7}]},
             "invalid_message", "messages[1].payload"),
            ({"org_id": ORG_OK, "messages": [{"id": first, "payload": "a"},
                                             {"payload": "a"}]},
             "invalid_message", "messages[1].id"),
            ({"org_id": ORG_OK, "messages": [
                {"id": first, "payload": "a", "org_id": ORG_B}]},
             "invalid_org_id", "messages[0].org_id"),
            ({"org_id": ORG_OK, "messages": [{"id": first, "payload": "a"}]
              * 6}, "invalid_message", "messages"),
            ({"org_id": ORG_OK, "messages": []}, "invalid_message",
             "messages"),
            ({"org_id": "bad id", "messages": [{"id": first, "payload": "a"}]},
             "invalid_org_id", "org_id"),
            ({"messages": [{"id": first, "payload": "a"}]},
             "invalid_org_id", "org_id"),
            ({"org_id": ORG_OK, "messages": "x"}, "invalid_message",
             "messages"),
            ({"org_id": ORG_OK}, "invalid_message", "messages"),
            ({"org_id": ORG_OK, "messages": [{"id": first, "payload": "a"},
                                             "x"]},
             "invalid_message", "messages[1]"),
        ]
        for body, code, member in cases:
            r = self.batch(body)
            self.assertEqual((r.status, r.code), (400, code), r.body)
            self.assertIn(member, r.json()["error"]["message"])
            # With a member only jansson reads (a number), the body takes
            # the other reader (process_api.c): the same answer.
            other = self.batch(dict(body, x=1))
            self.assertEqual((other.status, other.json()),
                             (r.status, r.json()), body)
        self.assertEqual(row(ORG_OK, first), "")
        r = self.batch({"org_id": P + "nope", "messages": [
            {"id": first, "payload": "a"}]})
        self.assertEqual((r.status, r.code), (404, "unknown_org"))

    def test_413_over_the_batch_byte_limit_only(self):
        big = "a" * 1500  # over the batch limit with two, under it with one
        r = self.batch({"org_id": ORG_OK, "messages": [
            {"id": mid(), "payload": big}, {"id": mid(), "payload": big}]})
        self.assertEqual((r.status, r.code), (413, "payload_too_large"))
        one = mid("bl")
        r = self.batch({"org_id": ORG_OK, "messages": [
            {"id": one, "payload": big}]})
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(row(ORG_OK, one))

    def test_a_body_of_many_values_is_refused_before_a_tree(self):
        """4 MiB of "{}," once made jansson build a 330 MB tree before the
        400 (any key holder, each request): a body is refused unread past
        8 values per message allowed (+64), a message past 256; poold's
        peak memory stays put. Extra members within that still pass."""
        p = Poold(env={"POOLD_CLIENT_AUTH": "none"})  # 1 000, 4 MiB

        def peak_kib():
            return memory_bytes(p.proc.pid, "VmHWM") // 1024

        try:
            before = peak_kib()
            n = (4 * 1024 * 1024 - 64) // 3
            body = (b'{"org_id":"' + ORG_OK.encode() +
                    b'","messages":1,"x":[' + b"{}," * n + b"{}]}")
            r = p.request("POST", "/process/batch", body=body,
                          headers={"Content-Type": "application/json"},
                          route="/process/batch")
            # A batch past its values has too many (or too large)
            # messages: 400 invalid_message naming them (DESIGN.md).
            self.assertEqual((r.status, r.code), (400, "invalid_message"))
            self.assertIn("more than 8064 JSON values",
                          r.json()["error"]["message"])
            self.assertIn("'messages'", r.json()["error"]["message"])
            r = p.request("POST", "/process/batch", body={
                "org_id": ORG_OK, "messages": [
                    {"id": mid("bn"), "payload": "ab", "n": 1}
                    for _ in range(2100)]}, route="/process/batch")
            self.assertEqual((r.status, r.code), (400, "invalid_message"))
            self.assertIn("array of 1 to 1000 messages",
                          r.json()["error"]["message"])
            body = (b'{"id":"a","org_id":"' + ORG_OK.encode() +
                    b'","payload":"ab","x":[' + b"0," * 30000 + b"0]}")
            r = p.request("POST", "/process", body=body,
                          headers={"Content-Type": "application/json"},
                          route="/process")
            self.assertEqual((r.status, r.code), (400, "invalid_json"))
            self.assertIn("more than 256", r.json()["error"]["message"])
            self.assertLess(peak_kib() - before, 64 * 1024)
            ids = [mid("bx") for _ in range(100)]
            r = p.request("POST", "/process/batch", body={
                "org_id": ORG_OK, "messages": [
                    {"id": i, "payload": "ab", "n": 1, "tags": ["a", "b"]}
                    for i in ids]}, route="/process/batch")
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertTrue(row(ORG_OK, ids[-1]))
        finally:
            self.assertEqual(p.stop(), 0)

    def test_a_long_list_of_flat_messages_is_not_held(self):
        """The in-place reader of batches once read a whole 4 MiB list of
        {"a":"b"} (420 000 objects, 27 MB) before counting it: it stops
        past POOLD_MAX_BATCH objects, and the batch is refused as too long
        (400 invalid_message naming messages, as DESIGN.md says; it was
        invalid_json from the bounded parser). Four at once leave poold's
        peak memory near their bodies."""
        p = Poold(env={"POOLD_CLIENT_AUTH": "none"})  # 1 000, 4 MiB
        n = (4 * 1024 * 1024 - 64) // 10
        body = (b'{"org_id":"' + ORG_OK.encode() + b'","messages":[' +
                b'{"a":"b"},' * n + b'{"a":"b"}]}')
        answers = []

        def post():
            r = p.request("POST", "/process/batch", body=body,
                          headers={"Content-Type": "application/json"},
                          route="/process/batch")
            answers.append((r.status, r.code))

        try:
            before = memory_bytes(p.proc.pid, "VmHWM") // 1024
            threads = [threading.Thread(target=post) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(answers, [(400, "invalid_message")] * 4)
            peak = memory_bytes(p.proc.pid, "VmHWM") // 1024
            if not os.environ.get("POOLD_TEST_SANITIZE"):  # shadow memory
                # Each holds its body and a copy (8 MiB): 32 MiB, and 108
                # more when the lists were read whole.
                self.assertLess(peak - before, 56 * 1024)
        finally:
            self.assertEqual(p.stop(), 0)

    def test_group_commit_under_concurrency(self):
        """Pool size 4, many concurrent requests of one org: every one is
        committed, at most 4 processed at once, and writes that queued
        behind a commit in flight go in one statement."""
        p = Poold(env={"POOLD_CLIENT_AUTH": "none", "POOLD_POOL_SIZE": "4",
                       "POOLD_MAX_WAITING": "256"})
        ids = [mid("g%d_" % i) for i in range(160)]
        answers = {}

        def post(chunk):
            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
            for i in chunk:
                r = p.process({"id": i, "org_id": ORG_RULES,
                               "payload": "abcdef"}, conn=conn)
                answers[i] = r.status
            conn.close()

        try:
            threads = [threading.Thread(target=post, args=(ids[k::32],))
                       for k in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(set(answers.values()), {200}, answers)
            lst = ",".join("'%s'" % i for i in ids)
            self.assertEqual(psql(
                "SELECT count(*) FROM processed_messages WHERE org_id = '%s'"
                " AND message_id IN (%s)" % (ORG_RULES, lst)), str(len(ids)))
            st = p.pool(ORG_RULES)
            self.assertEqual(st["group_messages"], len(ids))
            self.assertLess(st["group_commits"], len(ids),
                            "no group of more than one message")
            self.assertLessEqual(st["peak_active"], 4)
        finally:
            self.assertEqual(p.stop(), 0)


class BatchByCopy(unittest.TestCase):
    """A batch of more than 64 messages is stored by COPY (service_commit.c),
    which has no ON CONFLICT: the same answers and rows as the INSERT,
    whatever is stored already."""

    def batch(self, messages):
        return SERVER.request("POST", "/process/batch", route="/process/batch",
                              body={"org_id": ORG_RULES, "messages": messages})

    def copies_since(self, t0):
        """Backends whose last statement, started at t0 or later, was a
        COPY into processed_messages."""
        return int(psql("SELECT count(*) FROM pg_stat_activity WHERE query"
                        " LIKE 'COPY processed_messages%%' AND query_start"
                        " >= '%s'" % t0))

    def calm(self):
        """Whether now is a minute or more from a partition boundary (near
        one, commits take the full statement, never COPY)."""
        return psql("SELECT coalesce(bool_or(now() >= lo + interval '70 s'"
                    " AND now() < hi - interval '70 s'), false) FROM"
                    " message_partitions WHERE lo <= now() AND now() < hi"
                    ) == "t"

    def test_new_messages_rows_as_the_single_route_stores_them(self):
        payloads = ["cafe", "xyz", "abcdef0123", "zz"]
        msgs = [{"id": "msg_" + mid("c") if i % 3 else mid("c"),
                 "payload": payloads[i % len(payloads)]} for i in range(100)]
        t0 = psql("SELECT now()")
        r = self.batch(msgs)
        self.assertEqual(r.status, 200, r.body)
        res = r.json()["results"]
        self.assertEqual([e["message_id"] for e in res],
                         [m["id"] for m in msgs])
        self.assertEqual({e["duplicate"] for e in res}, {False})
        if self.calm():
            self.assertGreaterEqual(self.copies_since(t0), 1)
        for i, m in enumerate(msgs[:8]):
            # The same message through POST /process, under another id:
            # the same result and the same row but for the id.
            one = dict(m, id=m["id"] + "s", org_id=ORG_RULES)
            r1 = SERVER.process(one)
            self.assertEqual(r1.status, 200, r1.body)
            self.assertEqual(r1.json()["passed"], res[i]["passed"])
            self.assertEqual(r1.json()["details"], res[i]["details"])
            self.assertEqual(row(ORG_RULES, m["id"]),
                             row(ORG_RULES, one["id"]))
            self.assertEqual(row(ORG_RULES, m["id"]).split("|")[3],
                             hashlib.sha256(m["payload"].encode()).hexdigest())
        self.assertEqual(psql(
            "SELECT count(*) FROM processed_messages WHERE org_id = '%s'"
            " AND message_id IN (%s)" % (ORG_RULES, ",".join(
                "'%s'" % m["id"] for m in msgs))), "100")

    def test_stored_ids_repeats_and_conflicts_answer_as_without_copy(self):
        before = [{"id": mid("s"), "payload": "ab%02d" % i} for i in range(10)]
        r = self.batch(before[:5] + [{"id": before[i]["id"],
                                      "payload": before[i]["payload"]}
                                     for i in range(5, 10)])
        self.assertEqual(r.status, 200, r.body)
        new = [{"id": mid("n"), "payload": "cd%02d" % i} for i in range(70)]
        # Stored: 5 the same (duplicates), 5 another payload (conflicts);
        # in the batch: a repeat of a new id, and one with another payload.
        msgs = (new[:35] + before[:5] +
                [dict(m, payload="other") for m in before[5:]] + new[35:] +
                [new[0], dict(new[1], payload="other")])
        r = self.batch(msgs)
        self.assertEqual(r.status, 200, r.body)
        res = r.json()["results"]
        self.assertEqual(len(res), 82)
        self.assertEqual([e.get("duplicate") for e in res[:40]],
                         [False] * 35 + [True] * 5)
        self.assertEqual([e["error"]["code"] for e in res[40:45]],
                         ["id_conflict"] * 5)
        self.assertEqual([e.get("duplicate") for e in res[45:81]],
                         [False] * 35 + [True])
        self.assertEqual(res[81]["error"]["code"], "id_conflict")
        self.assertEqual(psql(
            "SELECT count(*) FROM processed_messages WHERE org_id = '%s'"
            " AND message_id IN (%s)" % (ORG_RULES, ",".join(
                "'%s'" % m["id"] for m in new + before))), "80")
        for m in before[5:]:
            self.assertEqual(row(ORG_RULES, m["id"]).split("|")[3],
                             hashlib.sha256(m["payload"].encode()).hexdigest())
        # Every id stored now: the same batch again is all answered from
        # the stored rows.
        r = self.batch(new)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({e["duplicate"] for e in r.json()["results"]}, {True})


class WarmConnections(unittest.TestCase):
    def stats(self, p):
        r = p.get("/stats", token=TOKEN, route="/stats")
        self.assertEqual(r.status, 200)
        return r.json()

    def test_min_idle_opened_at_start_and_topped_up(self):
        p = Poold(env={"POOLD_CLIENT_AUTH": "none", "POOLD_DB_MIN_IDLE": "3"})
        try:
            # A misconfigured org: its first request tries one build (an
            # org's rules are parsed when it first builds, not for every
            # org at load: issue 19) and answers 503; the next is answered
            # from what that build found, no build, no connection taken.
            r = p.process({"id": mid(), "org_id": ORG_BAD, "payload": "ab"})
            self.assertEqual((r.status, r.code), (503, "org_misconfigured"))
            wait_for(lambda: self.stats(p)["connections"]["idle"] >= 3, 20,
                     "3 warm connections")
            before = self.stats(p)["connections"]
            r = p.process({"id": mid(), "org_id": ORG_BAD, "payload": "ab"})
            self.assertEqual((r.status, r.code), (503, "org_misconfigured"))
            self.assertEqual(self.stats(p)["connections"]["acquired"],
                             before["acquired"])
            # A first request builds its service on a warm connection (no
            # wait for one), and the pool tops itself up again.
            r = p.process({"id": mid(), "org_id": ORG_RULES, "payload": "ab"})
            self.assertEqual(r.status, 200, r.body)
            after = self.stats(p)["connections"]
            self.assertEqual(after["wait_count"], 0)
            self.assertEqual(after["acquired"], before["acquired"] + 1)
            wait_for(lambda: self.stats(p)["connections"]["idle"] >= 3, 20,
                     "the warm connections topped up")
        finally:
            self.assertEqual(p.stop(), 0)

    def test_min_idle_is_clamped_to_the_cap(self):
        p = Poold(env={"POOLD_CLIENT_AUTH": "none", "POOLD_DB_MIN_IDLE": "50",
                       "POOLD_DB_MAX_CONNS": "2"})
        try:
            wait_for(lambda: self.stats(p)["connections"]["idle"] == 2, 20,
                     "2 warm connections")
            r = p.process({"id": mid(), "org_id": ORG_OK, "payload": "ab"})
            self.assertEqual(r.status, 200, r.body)
            c = self.stats(p)["connections"]
            self.assertLessEqual(c["idle"] + c["active"], 2)
        finally:
            self.assertEqual(p.stop(), 0)


if __name__ == "__main__":
    unittest.main()
