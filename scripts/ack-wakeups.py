#!/usr/bin/env python3
"""Acknowledgements per second on one group while long polls wait on another.

    scripts/ack-wakeups.py ANNAL_BINARY PORT POLLS SECONDS

Serves a temporary store (`annal serve --no-auth` on 127.0.0.1:PORT), makes
groups `idle` (an empty stream) and `busy` (20,000 events), starts POLLS
threads long-polling `idle` (timeout_ms=20000), then fetches and acknowledges
one event of `busy` at a time for SECONDS and prints the acks per second.
Acks used to wake every waiting fetch of every group (each a look on the
blocking pool); now they wake only their own group's.
"""
import http.client, json, subprocess, sys, tempfile, threading, time, os, socket

binary, port, polls, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
data = tempfile.mkdtemp(prefix="srv2-")
srv = subprocess.Popen([binary, "--data", data, "serve", "--no-auth", "--listen", f"127.0.0.1:{port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def call(c, method, path, body=None):
    h = {"content-type": "application/json"} if body is not None else {}
    c.request(method, path, body=None if body is None else json.dumps(body), headers=h)
    r = c.getresponse(); b = r.read()
    return r.status, (json.loads(b) if b else None)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
c = conn()
assert call(c, "PUT", "/groups/idle", {"stream": "quiet"})[0] == 201
assert call(c, "PUT", "/groups/busy", {"stream": "work", "ack_timeout_ms": 600000})[0] == 201
evs = [{"type": "T", "data": {"i": i}} for i in range(1000)]
for _ in range(20):
    assert call(c, "POST", "/streams/work", {"events": evs})[0] == 200
stop = False
def poll(i):
    pc = conn()
    while not stop:
        try:
            call(pc, "POST", f"/groups/idle/fetch?consumer=c{i}&timeout_ms=20000")
        except Exception:
            return
threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(polls)]
for t in threads: t.start()
time.sleep(1.5)
n = 0; t0 = time.time()
while time.time() - t0 < secs:
    st, v = call(c, "POST", "/groups/busy/fetch?consumer=w&max=1")
    ids = [e["id"] for e in v["events"]]
    st, _ = call(c, "POST", "/groups/busy/ack", {"consumer": "w", "ids": ids})
    assert st == 204
    n += 1
print(f"{n/(time.time()-t0):.0f}")
stop = True
srv.terminate(); srv.wait()
subprocess.run(["rm", "-rf", data])
