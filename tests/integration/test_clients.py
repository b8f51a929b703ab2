"""test_clients.py — slow and hostile clients, client request ids, HTTPS.

The real poold binary over real sockets (DESIGN.md Configuration:
POOLD_REQUEST_READ_TIMEOUT_S, POOLD_TLS_CERT / POOLD_TLS_KEY; "Details an
implementer must not guess": X-Request-Id). Environment as test_http.py.
"""
import http.client
import json
import os
import resource
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from harness import (ADMIN_URL, BIN, Poold, check_against_spec, psql,
                     require_env, wait_for)

P = "tc" + uuid.uuid4().hex[:8] + "_"
ORG = P + "ok"
# POOLD_REQUEST_READ_TIMEOUT_S in these tests (the README's figures for 10
# come from TEST_READ_TIMEOUT_S=10).
READ_TIMEOUT = int(os.environ.get("TEST_READ_TIMEOUT_S", "2"))
MAX_CLIENTS = 64
SLACK = 3.0          # "a few seconds": the check interval, a loaded machine
NO_AUTH = {"POOLD_CLIENT_AUTH": "none"}


def setUpModule():
    require_env()
    psql(f"INSERT INTO orgs (org_id, enabled, config) VALUES "
         f"('{ORG}', true, '{{\"rules\":[]}}')")


def tearDownModule():
    if ADMIN_URL:
        psql(f"DELETE FROM processed_messages WHERE org_id LIKE '{P}%';"
             f"DELETE FROM orgs WHERE org_id LIKE '{P}%'")


def message(tag):
    return {"id": P + tag + uuid.uuid4().hex[:8], "org_id": ORG,
            "payload": "ab"}


def read_response(sock, timeout):
    """One HTTP response from sock (Content-Length bodies); b"" if the
    server closed the connection without one."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
        head, sep, body = out.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                return out


def closed_by_server(sock, timeout):
    """Seconds until the server closes sock (EOF or reset) and the bytes
    it sent meanwhile; raises if it stays open past timeout."""
    t0 = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk
    raise AssertionError("the server kept the connection open")


def trickle_until_closed(sock, byte, interval=0.5):
    """Send byte every interval until the server closes sock; returns what
    closed_by_server() returns."""
    stop = threading.Event()

    def trickle():
        while not stop.wait(interval):
            try:
                sock.send(byte)
            except OSError:
                return
    th = threading.Thread(target=trickle)
    th.start()
    try:
        return closed_by_server(sock, READ_TIMEOUT + 10)
    finally:
        stop.set()
        th.join(10)


class Tricklers:
    """Clients that send a request line, then one header byte every
    `interval` seconds, and reconnect when the server closes them; every
    connection's life is recorded. One thread, non-blocking sockets."""

    def __init__(self, port, count, interval=1.0):
        self.port, self.count, self.interval = port, count, interval
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.done = []      # (opened, closed, got_http_bytes)
        self.open = {}      # socket -> [opened, next_send, got bytes]
        self.errors = []
        self.thread = threading.Thread(target=self.run)

    def connect(self):
        s = socket.socket()
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", self.port))
            s.sendall(b"POST /process HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        except OSError as e:
            s.close()
            self.errors.append(repr(e))
            return
        s.setblocking(False)
        now = time.monotonic()
        self.open[s] = [now, now + self.interval, b""]

    def finish(self, s, now):
        opened, _, got = self.open.pop(s)
        s.close()
        with self.lock:
            self.done.append((opened, now, got))

    def run(self):
        for _ in range(self.count):
            self.connect()
        self.started = time.monotonic()
        while not self.stop_flag.is_set():
            socks = list(self.open)
            readable = select.select(socks, [], [], 0.1)[0] if socks else []
            now = time.monotonic()
            for s in readable:
                try:
                    chunk = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    self.open[s][2] += chunk
                    continue
                self.finish(s, now)
                self.connect()  # a real attacker comes back
            for s, st in list(self.open.items()):
                if st[1] <= now:
                    st[1] = now + self.interval
                    try:
                        s.send(b"a")
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.finish(s, now)
                        self.connect()
        for s in list(self.open):
            s.close()
        self.open.clear()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(60)

    def lives(self):
        with self.lock:
            return list(self.done)


class SlowClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Poold(env=dict(
            NO_AUTH, POOLD_MAX_CLIENTS=str(MAX_CLIENTS),
            POOLD_REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT),
            POOLD_CLIENT_TIMEOUT_S="20"))

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0

    def test_tricklers_never_keep_a_normal_client_out(self):
        srv = self.server
        count = 5 * MAX_CLIENTS  # 320: five times the slots
        with Tricklers(srv.port, count) as t:
            wait_for(lambda: len(t.open) + len(t.done) >= count, 60,
                     "the tricklers to connect")
            # Every slot is taken and a queue of tricklers waits behind them.
            wait_for(lambda: time.monotonic() - t.started > 1, 5, "a second")
            waits = []
            for i in range(10):
                t0 = time.monotonic()
                if i % 2:
                    r = srv.process(message("n%d" % i), timeout=30)
                else:
                    r = srv.get("/healthz", route="/healthz", timeout=30)
                took = time.monotonic() - t0
                waits.append(took)
                self.assertEqual(r.status, 200, r.body)
                self.assertLess(took, READ_TIMEOUT + SLACK,
                                "request %d waited %.1f s" % (i, took))
            # Run long enough for several deadlines to pass.
            wait_for(lambda: len(t.lives()) >= 3 * MAX_CLIENTS, 60,
                     "tricklers to be cut")
        lives = t.lives()
        longest = max(c - o for o, c, _ in lives)
        sys.stderr.write(
            "\n%d tricklers, %d slots, deadline %d s: normal client waited "
            "max %.2f s, median %.2f s; %d trickler connections, longest "
            "%.2f s\n" % (count, MAX_CLIENTS, READ_TIMEOUT, max(waits),
                          sorted(waits)[len(waits) // 2], len(lives),
                          longest))
        self.assertEqual(t.errors, [])
        # No trickler got an answer or stayed past the deadline (measured
        # from its connect, kernel backlog included).
        self.assertEqual([g for _, _, g in lives if g], [])
        self.assertLess(longest, READ_TIMEOUT + SLACK + 1)
        # Slots were really held by tricklers until the deadline.
        cut = [c - o for o, c, _ in lives if c - o >= READ_TIMEOUT - 0.5]
        self.assertGreaterEqual(len(cut), MAX_CLIENTS)
        self.assertIn("request read timeout", srv.logtext())

    def test_slow_body_is_cut(self):
        s = socket.create_connection(("127.0.0.1", self.server.port))
        try:
            s.sendall(b"POST /process HTTP/1.1\r\nHost: t\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{")
            took, data = trickle_until_closed(s, b" ")
        finally:
            s.close()
        self.assertEqual(data, b"")
        self.assertGreater(took, READ_TIMEOUT - 0.5)
        self.assertLess(took, READ_TIMEOUT + SLACK)

    def test_silent_connection_is_cut(self):
        s = socket.create_connection(("127.0.0.1", self.server.port))
        try:
            took, data = closed_by_server(s, READ_TIMEOUT + 10)
        finally:
            s.close()
        self.assertEqual(data, b"")
        self.assertGreater(took, READ_TIMEOUT - 0.5)
        self.assertLess(took, READ_TIMEOUT + SLACK)

    def test_idle_keep_alive_is_not_cut_but_its_next_slow_request_is(self):
        req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", self.server.port))
        try:
            s.sendall(req)
            self.assertTrue(read_response(s, 10).startswith(b"HTTP/1.1 200"))
            # Idle for twice the read deadline: only the client timeout
            # (20 s here) may close an idle connection. A wait for
            # something that must not happen has to be a plain wait.
            r, _, _ = select.select([s], [], [], 2 * READ_TIMEOUT + 1)
            self.assertEqual(r, [], "the idle connection was closed")
            s.sendall(req)
            self.assertTrue(read_response(s, 10).startswith(b"HTTP/1.1 200"))
            # The next request trickles: cut one deadline after it began,
            # not counting the idle time before it.
            r, _, _ = select.select([s], [], [], READ_TIMEOUT + 1)
            self.assertEqual(r, [])
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            t0 = time.monotonic()
            trickle_until_closed(s, b"X")
            took = time.monotonic() - t0
        finally:
            s.close()
        self.assertGreater(took, READ_TIMEOUT - 0.5)
        self.assertLess(took, READ_TIMEOUT + SLACK)

    def test_a_slow_but_steady_request_within_the_deadline_is_served(self):
        msg = json.dumps(message("steady")).encode()
        head = (b"POST /process HTTP/1.1\r\nHost: t\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(msg))
        s = socket.create_connection(("127.0.0.1", self.server.port))
        try:
            # Four pieces over about half the deadline.
            data = head + msg
            step = len(data) // 4 + 1
            for i in range(0, len(data), step):
                s.sendall(data[i:i + step])
                time.sleep(READ_TIMEOUT / 8)  # pacing the client, not a sync
            out = read_response(s, 10)
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])


class Flood(unittest.TestCase):
    def test_a_flood_beyond_the_waiting_room(self):
        # 8 slots and, with 512 descriptors, a room of 512 - 8 - 256 = 248:
        # 320 tricklers overflow both, so waiting tricklers are evicted for
        # newcomers and the rest queue in the kernel's backlog.
        def low_fd_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
        srv = Poold(env=dict(NO_AUTH, POOLD_MAX_CLIENTS="8",
                             POOLD_REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT)),
                    preexec_fn=low_fd_limit)
        try:
            with Tricklers(srv.port, 320) as t:
                wait_for(lambda: len(t.open) + len(t.done) >= 320, 60,
                         "the tricklers to connect")
                wait_for(lambda: len(t.lives()) >= 100, 30,
                         "waiting tricklers to be evicted")
                for i in range(5):
                    t0 = time.monotonic()
                    r = srv.process(message("f%d" % i), timeout=30)
                    self.assertEqual(r.status, 200, r.body)
                    self.assertLess(time.monotonic() - t0,
                                    READ_TIMEOUT + SLACK)
            lives = t.lives()
            self.assertEqual(t.errors, [])
            self.assertEqual([g for _, _, g in lives if g], [])
            evicted = [c - o for o, c, _ in lives if c - o < READ_TIMEOUT - 0.5]
            sys.stderr.write("\nflood: %d trickler connections, %d closed "
                             "before the deadline (evicted)\n"
                             % (len(lives), len(evicted)))
            self.assertGreater(len(evicted), 0)
        finally:
            self.assertEqual(srv.stop(), 0)


class RequestIds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Poold(env=NO_AUTH)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0

    def test_a_valid_client_id_is_kept(self):
        for rid in ("abc", "A-z_0.9:x", "x" * 128,
                    "req-" + uuid.uuid4().hex):
            with self.subTest(rid=rid):
                r = self.server.get("/healthz", headers={"X-Request-Id": rid},
                                    route="/healthz")
                self.assertEqual(r.headers["x-request-id"], rid)
        rid = "proc:" + uuid.uuid4().hex
        r = self.server.process(message("rid"),
                                headers={"X-Request-Id": rid})
        self.assertEqual((r.status, r.headers["x-request-id"]), (200, rid))
        wait_for(lambda: 'id="%s"' % rid in self.server.logtext(), 5,
                 "the client's id in the access log")

    def test_an_invalid_client_id_is_replaced(self):
        for rid in ("x" * 129, "a b", 'a"b', "a/b", "é", "a\tb", "<x>",
                    "a,b"):
            with self.subTest(rid=rid):
                r = self.server.get(
                    "/healthz", headers={"X-Request-Id": rid.encode()})
                got = r.headers["x-request-id"]
                self.assertNotEqual(got, rid)
                self.assertRegex(got, r"^[A-Za-z0-9._:-]{1,128}$")
        a = self.server.get("/healthz", headers={"X-Request-Id": ""})
        self.assertRegex(a.headers["x-request-id"], r"^[0-9a-f]{16,}$")


# ---- HTTPS --------------------------------------------------------------------

def make_cert(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    return cert, key


class Https(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="poold-tls-")
        cls.cert, cls.key = make_cert(cls.dir)
        cls.server = Poold(env=dict(NO_AUTH, POOLD_TLS_CERT=cls.cert,
                                    POOLD_TLS_KEY=cls.key), wait_ready=False)
        cls.ctx = ssl.create_default_context(cafile=cls.cert)

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)
        assert code == 0

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPSConnection("127.0.0.1", self.server.port,
                                        context=self.ctx, timeout=20)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, \
                r.read()
        finally:
            c.close()

    def test_https_healthz_and_process(self):
        wait_for(lambda: self.request("GET", "/readyz")[0] == 200, 20,
                 "readiness over HTTPS")
        status, headers, body = self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        check_against_spec("/healthz", "GET", status, headers, body)
        msg = message("tls")
        status, headers, body = self.request(
            "POST", "/process", json.dumps(msg),
            {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        check_against_spec("/process", "POST", status, headers, body)
        self.assertEqual(json.loads(body)["message_id"], msg["id"])
        self.assertEqual(psql("SELECT count(*) FROM processed_messages WHERE "
                              f"org_id = '{ORG}' AND "
                              f"message_id = '{msg['id']}'"), "1")

    def test_curl_with_the_ca(self):
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--cacert", self.cert,
             "https://localhost:%d/healthz" % self.server.port],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout), {"status": "ok"})
        # Without the CA, curl refuses the self-signed certificate.
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20",
             "https://localhost:%d/healthz" % self.server.port],
            capture_output=True, text=True, timeout=30)
        self.assertNotEqual(out.returncode, 0)

    def test_plain_http_gets_no_http_answer(self):
        s = socket.create_connection(("127.0.0.1", self.server.port))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            _, data = closed_by_server(s, 15)
        finally:
            s.close()
        self.assertFalse(data.startswith(b"HTTP/"), data[:100])
        # ... and HTTPS still works after it.
        self.assertEqual(self.request("GET", "/healthz")[0], 200)


class TlsSettings(unittest.TestCase):
    def run_bin(self, env):
        e = {k: v for k, v in os.environ.items() if not k.startswith("POOLD_")}
        e.update(env)
        return subprocess.run([BIN], capture_output=True, text=True, env=e,
                              timeout=20)

    def test_both_or_neither_and_readable_pem(self):
        d = tempfile.mkdtemp(prefix="poold-tls-")
        try:
            cert, key = make_cert(d)
            junk = os.path.join(d, "junk.pem")
            with open(junk, "w") as f:
                f.write("not a certificate\n")
            missing = os.path.join(d, "missing.pem")
            cases = [({"POOLD_TLS_CERT": cert}, "POOLD_TLS_KEY"),
                     ({"POOLD_TLS_KEY": key}, "POOLD_TLS_CERT"),
                     ({"POOLD_TLS_CERT": missing, "POOLD_TLS_KEY": key},
                      "POOLD_TLS_CERT"),
                     ({"POOLD_TLS_CERT": cert, "POOLD_TLS_KEY": missing},
                      "POOLD_TLS_KEY"),
                     ({"POOLD_TLS_CERT": junk, "POOLD_TLS_KEY": key},
                      "POOLD_TLS_CERT")]
            for env, name in cases:
                with self.subTest(env=env):
                    r = self.run_bin(env)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn(name, r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
