#!/usr/bin/env python3
"""Parallel uploads against a chat node (scripts/bench-media.sh runs it).

Registers a user, then runs N uploads of SIZE bytes at once, each streamed
in 64 KiB chunks with chunked transfer encoding (the node never learns the
size up front), while a thread samples the node's resident memory from
/proc every 20 ms. Prints one JSON object: MiB/s, wall time, the node's
idle and peak RSS, and its CPU seconds over the run.
"""
import http.client
import json
import os
import sys
import threading
import time

host, port = sys.argv[1], int(sys.argv[2])
pid = int(sys.argv[3])
parallel = int(sys.argv[4])
size = int(sys.argv[5])
CHUNK = 64 * 1024
block = os.urandom(CHUNK)


def call(method, path, body=None, token=None, headers=None):
    c = http.client.HTTPConnection(host, port, timeout=600)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h, encode_chunked=not isinstance(body, (str, bytes, type(None))))
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_secs():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def body():
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield block[:n]
        sent += n


name = f"bench{int(time.time() * 1000)}"
status, data = call("POST", "/v1/auth/register", {"username": name, "password": "correct horse battery"})
assert status == 201, (status, data)
token = json.loads(data)["access_token"]

idle = rss_kib()
peak = [idle]
stop = threading.Event()


def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib())
        time.sleep(0.02)


results = []


def upload(i):
    status, data = call("POST", f"/v1/media?name=file{i}.bin", body(), token,
                        {"Content-Type": "application/octet-stream"})
    results.append(status)


sampler = threading.Thread(target=sample)
sampler.start()
cpu0 = cpu_secs()
t0 = time.time()
threads = [threading.Thread(target=upload, args=(i,)) for i in range(parallel)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.time() - t0
cpu = cpu_secs() - cpu0
stop.set()
sampler.join()
ok = sum(1 for s in results if s == 201)
total = size * parallel
print(json.dumps({
    "uploads": parallel,
    "size_mib": size / 2**20,
    "created": ok,
    "statuses": sorted(set(results)),
    "wall_s": round(wall, 2),
    "mib_per_s": round(total / 2**20 / wall, 1),
    "node_cpu_s": round(cpu, 2),
    "node_cpu_ms_per_mib": round(cpu * 1000 / (total / 2**20), 2),
    "rss_idle_mib": round(idle / 1024, 1),
    "rss_peak_mib": round(peak[0] / 1024, 1),
    "rss_over_idle_mib": round((peak[0] - idle) / 1024, 1),
}))
