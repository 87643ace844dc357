#!/usr/bin/env python3
"""The broker's cost per job: jobs through the whole cluster path on one machine.

Starts its own redis-server (AOF on) and `superres serve` nodes of the given binary (one
API node and one worker node with --workers 2, sharing a blob folder), sends N tiny images
through POST /enhance from C client threads, and reports jobs per second and Redis
commands per job (from INFO commandstats, before and after), by command.

    python3 bench/cluster.py [--bin target/release/superres] [--jobs 400] [--clients 8]

Python standard library only. The image is tiny (16x16) so that the model costs little and
the figure is the broker's: upload, blob store, scripts, pub/sub, result.
"""

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import zlib


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(w, h):
    raw = b"".join(b"\0" + bytes((x * 7 + y * 3) % 256 for x in range(w * 3)) for y in range(h))

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def multipart(image):
    boundary = "superresbench"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
        "Content-Type: image/png\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return out.stdout


def commandstats(port):
    stats = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.split(","))
            stats[name] = int(fields["calls"])
    return stats


def redis_cpu(port):
    info = dict(
        line.split(":", 1) for line in redis_cli(port, "INFO", "cpu").splitlines() if ":" in line
    )
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def wait_ready(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not become ready")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/superres")
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="superres-cluster-bench-")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", work],
        stdout=subprocess.DEVNULL,
    )
    nodes = []
    try:
        while redis_cli(port, "PING").strip() != "PONG":
            time.sleep(0.02)
        broker = f"redis://127.0.0.1:{port}"
        blobs = f"file://{work}/blobs"
        api_port, worker_port = free_port(), free_port()
        common = ["serve", "--broker", broker, "--blob-store", blobs, "--device", "cpu",
                  "--queue-size", str(args.clients * 2)]
        env = dict(os.environ, SUPERRES_LOG="warn")
        nodes.append(subprocess.Popen([args.bin, *common, "--role", "api", "--bind", f"127.0.0.1:{api_port}"], env=env))
        nodes.append(subprocess.Popen([args.bin, *common, "--role", "worker", "--workers", "2",
                                       "--bind", f"127.0.0.1:{worker_port}"], env=env))
        api = f"http://127.0.0.1:{api_port}"
        wait_ready(api)
        wait_ready(f"http://127.0.0.1:{worker_port}")
        body, content_type = multipart(png(16, 16))

        def one():
            req = urllib.request.Request(api + "/enhance", data=body, method="POST",
                                         headers={"Content-Type": content_type})
            with urllib.request.urlopen(req, timeout=60) as r:
                assert r.status == 200, r.status
                r.read()

        for _ in range(20):  # warm-up: scripts loaded, connections made
            one()
        before = commandstats(port)
        cpu_before = redis_cpu(port)
        todo = iter(range(args.jobs))
        lock = threading.Lock()
        failures = []

        def client():
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                try:
                    one()
                except Exception as e:  # noqa: BLE001 - reported below
                    failures.append(repr(e))

        started = time.time()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - started
        after = commandstats(port)
        cpu = redis_cpu(port) - cpu_before
        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        calls = {k: v for k, v in calls.items() if v > 0 and k not in ("info",)}
        total = sum(calls.values())
        report = {
            "jobs": args.jobs,
            "clients": args.clients,
            "failures": len(failures),
            "seconds": round(elapsed, 2),
            "jobs_per_second": round(args.jobs / elapsed, 1),
            "redis_commands_per_job": round(total / args.jobs, 1),
            "redis_cpu_ms_per_job": round(cpu * 1000 / args.jobs, 3),
            "jobs_per_redis_cpu_second": round(args.jobs / cpu) if cpu > 0 else None,
            "by_command_per_job": {k: round(v / args.jobs, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
        }
        print(json.dumps(report, indent=1))
        if failures:
            raise SystemExit(f"{len(failures)} requests failed, first: {failures[0]}")
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
