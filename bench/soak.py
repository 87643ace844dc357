#!/usr/bin/env python3
"""Bounded soak test of `superres serve`: mixed traffic for a fixed time against a real server.

    python3 bench/soak.py --minutes 30 --bin target/release/superres [--json soak.json]

(`bench/soak.sh MINUTES` is the usual way in: it finds the binary, makes the temporary folder
and cleans up.) Python 3 standard library only.

What it does
------------
Starts `superres serve --bind 127.0.0.1:PORT --models DIR --admin-token-file FILE
--queue-size 4 --workers 2 --result-ttl-secs 20` on a free port, with a models folder holding
copies of `$SUPERRES_SHARED/models/synthetic/EDSR_B2F16_x2.pb` (as `tiny.pb`, x2) and
`models/default_x3.onnx` (as `default.onnx`, x3), whichever exist. Then, for MINUTES minutes:

- client threads (`--clients`): valid PNG (RGB, grey, RGBA) and JPEG uploads of 16x16, 48x32
  and 96x96 to `POST /enhance` (the answer must be a valid PNG -- signature, chunk CRCs,
  IDAT inflating to exactly the rows the header declares -- of the input's size times the
  model's scale, with the input's channels) and to `POST /v1/jobs`, followed by server-sent
  events on `/v1/jobs/{id}/events` (some by polling `GET /v1/jobs/{id}`) until a terminal
  status, then `GET /v1/jobs/{id}/result`; cancels: three 256x192 jobs at once, so that the
  third waits behind the two running ones, then `DELETE` of the third at once (it must be
  `cancelled`, its result 409), of the first after a random delay (cancelled, or running and
  then ending, or already finished and so forgotten: 404 after), and the second followed to
  its end, fetched and deleted; `/enhance` clients that hang up while waiting;
- a hostile thread: truncated PNG, random bytes, a PNG header claiming 100000x100000, a
  truncated PNG claiming 2000x2000, an empty body, an empty image field, a body that is not
  multipart, malformed multipart, no image field, a 100 kB text field, an unknown model.
  Every one must get a 4xx (429 included), never a 2xx or 5xx; on `/v1/jobs` a 202 is allowed
  only for the ones whose header is sound (the truncated PNGs), and that job must then fail
  with a 4xx result;
- an admin thread: `POST /v1/models/reload` with the admin token (the model files' mtimes
  are touched on every other reload so the models are really loaded again; the answer must
  list every model and no errors), with a wrong token (403) and none (401), and the open
  endpoints (`/healthz`, `/readyz`, `/metrics`, `/v1/models`, `/v1/devices`, an unknown job);
- a burst thread: every `--burst-every` seconds, `--burst-size` uploads (half `/enhance`,
  half `/v1/jobs`) released at once from pre-opened connections, which overflow the queue:
  some must get 429, and every 429 must carry a positive integer `Retry-After`.

Checks, each a named failure
----------------------------
- `5xx`: any response >= 500, on any request.
- `result_store`: the result store of the idle server, once every result has expired, is
  not empty (`superres_result_store_bytes` in `/metrics`);
- `lost_job`: a job accepted (201/202) that is not seen in a terminal state (done, failed,
  cancelled) within `--job-deadline` seconds, or whose result is missing (404) when done.
- `bad_output`: an image answer that is not a valid PNG of the expected size and channels.
- `unexpected_status`: a status outside what the request may get (e.g. 400 for a valid
  upload, 200 for a hostile one, a valid job that fails).
- `retry_after`: a 429 without a positive integer `Retry-After`.
- `no_429`: the bursts never overloaded the queue (the 429 path was not exercised).
- `transport`: a connection refused or reset, a timeout, a malformed HTTP answer.
- `not_idle`: `/readyz` still reports queued or running jobs 30 s after the traffic ended.
- `growth_rss`, `growth_fds`, `growth_threads`: see the rule below.
- `panic`: the server's log contains a panic.
- `exit`: after SIGTERM the server does not exit with status 0 within `--exit-timeout`.
- `startup`: the server did not become ready.
- `driver`: an exception in this script's own threads (a bug here, reported, not hidden).

The growth rule
---------------
Every few seconds (`--sample-every`; default D/120 clamped to 1..5 s for a run of D seconds:
5 s for 10 minutes and more) the server's RSS (VmRSS of /proc/PID/status), open descriptors
(entries of /proc/PID/fd) and threads (Threads of /proc/PID/status) are sampled. The warm-up
is the first max(20% of D, min(30 s, 40% of D)): 20% and at least 30 s for runs of 150 s and
more, scaled down for shorter ones; it covers the first result time-to-live (20 s), after
which the stored results stop adding up. Two windows of max(10% of D, 15 samples) each (at
most 30% of D) are compared: the one right after the warm-up ("warm-up end") and the last
one of the traffic ("end").
- RSS: median(end) against median(warm-up end). RSS saws up and down by some 20% as runs
  allocate and free their buffers and results expire; the median of 15 or more samples
  stands still on that, and a leak moves it.
- descriptors and threads: median(end) against max(warm-up end). Both jump with
  connections in flight (a burst holds 16 sockets for a moment) and with the runtime's
  blocking threads, which come and go; a leak has to lift the typical value at the end above
  every value seen right after the warm-up.
A metric fails when it grew by more than `--max-growth` (10%) by that comparison. For a
30-minute run: samples every 5 s, warm-up 6 min, windows of 3 min (36 samples each). A run
much shorter than 2 minutes ends its warm-up before the stored results level off, so its RSS
comparison can fail without a leak: such runs check this script, not the server.

At the end the server gets SIGTERM and must exit 0 within `--exit-timeout` seconds; a summary
(requests by kind and status, jobs by outcome, 429s, the three metrics at warm-up end and at
the end with their growth) is printed, and written as JSON with `--json FILE`. The exit status
is 0 when every check passed, 1 when one failed (each named), 2 on a usage or setup error,
130 when interrupted.
"""

import argparse
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

TERMINAL = ("done", "failed", "cancelled")
SIZES = [(16, 16), (48, 32), (96, 96)]
LARGE = (256, 192)  # the cancelled jobs': long enough to still be queued when the DELETE comes
TOKEN_BYTES = 24
RESULT_TTL_S = 20


# ---------------------------------------------------------------------------------------
# images


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_header(width, height, color_type=2):
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))


def pixel_rows(width, height, channels, seed):
    """Gradients plus noise, one list of byte rows per channel interleaved."""
    rng = random.Random(seed)
    noise = rng.randbytes(width * height * channels)
    phase = [rng.randrange(256) for _ in range(channels)]
    rows = []
    for y in range(height):
        row = bytearray(width * channels)
        for x in range(width):
            for c in range(channels):
                i = (y * width + x) * channels + c
                if channels == 4 and c == 3:
                    v = 255 - (x * 255 // max(1, width - 1)) // 2
                else:
                    v = (x * (5 + 3 * c) + y * (7 - 2 * c) + phase[c] + noise[i] % 32) & 255
                row[x * channels + c] = v
        rows.append(bytes(row))
    return rows


def make_png(width, height, channels, seed):
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + r for r in pixel_rows(width, height, channels, seed))
    return png_header(width, height, color_type) + png_chunk(b"IDAT", zlib.compress(raw, 6)) + png_chunk(b"IEND", b"")


# A baseline JPEG encoder: YCbCr 4:4:4, one quantisation table, and one DC and one AC Huffman
# table in which every symbol has the same length (4 bits for the 12 DC categories, 8 bits for
# the 162 AC symbols): valid by the standard, just not compact.
ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
          41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
          30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40,
          57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35,
          55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112,
          100, 103, 99]
DC_SYMBOLS = list(range(12))
AC_SYMBOLS = [0x00, 0xF0] + [(run << 4) | size for run in range(16) for size in range(1, 11)]
DCT = [[(math.sqrt(0.125) if u == 0 else 0.5) * math.cos((2 * x + 1) * u * math.pi / 16)
        for x in range(8)] for u in range(8)]


class BitWriter:
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, length):
        self.acc = (self.acc << length) | (value & ((1 << length) - 1))
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self.acc &= (1 << self.n) - 1

    def flush(self):
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def jpeg_segment(marker, payload):
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def magnitude(v):
    size = abs(v).bit_length()
    return size, (v if v >= 0 else v + (1 << size) - 1)


def make_jpeg(width, height, seed, quality=85):
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    q = [min(255, max(1, int((t * scale + 50) / 100))) for t in LUMA_Q]
    rgb = pixel_rows(width, height, 3, seed)
    planes = [[[0.0] * width for _ in range(height)] for _ in range(3)]
    for y in range(height):
        row = rgb[y]
        for x in range(width):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            planes[0][y][x] = 0.299 * r + 0.587 * g + 0.114 * b - 128
            planes[1][y][x] = -0.168736 * r - 0.331264 * g + 0.5 * b
            planes[2][y][x] = 0.5 * r - 0.418688 * g - 0.081312 * b
    dc_code = {s: i for i, s in enumerate(DC_SYMBOLS)}
    ac_code = {s: i for i, s in enumerate(AC_SYMBOLS)}
    bits = BitWriter()
    previous_dc = [0, 0, 0]
    for by in range(0, height, 8):
        for bx in range(0, width, 8):
            for c in range(3):
                plane = planes[c]
                block = [[plane[min(by + i, height - 1)][min(bx + j, width - 1)] for j in range(8)] for i in range(8)]
                tmp = [[sum(DCT[u][x] * block[x][j] for x in range(8)) for j in range(8)] for u in range(8)]
                coef = [sum(tmp[u][y] * DCT[v][y] for y in range(8)) for u in range(8) for v in range(8)]
                zz = [int(round(coef[k] / q[k])) for k in ZIGZAG]
                diff = zz[0] - previous_dc[c]
                previous_dc[c] = zz[0]
                size, value = magnitude(diff)
                bits.put(dc_code[size], 4)
                if size:
                    bits.put(value, size)
                run = 0
                last = max((k for k in range(1, 64) if zz[k]), default=0)
                for k in range(1, last + 1):
                    if zz[k] == 0:
                        run += 1
                        continue
                    while run > 15:
                        bits.put(ac_code[0xF0], 8)
                        run -= 16
                    size, value = magnitude(max(-1023, min(1023, zz[k])))
                    bits.put(ac_code[(run << 4) | size], 8)
                    bits.put(value, size)
                    run = 0
                if last < 63:
                    bits.put(ac_code[0x00], 8)
    dqt = bytes([0]) + bytes(q[k] for k in ZIGZAG)
    counts_dc = [0] * 16
    counts_dc[3] = len(DC_SYMBOLS)
    counts_ac = [0] * 16
    counts_ac[7] = len(AC_SYMBOLS)
    dht = bytes([0x00] + counts_dc + DC_SYMBOLS) + bytes([0x10] + counts_ac + AC_SYMBOLS)
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    sos = bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0])
    return (b"\xFF\xD8" + jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + jpeg_segment(0xDB, dqt) + jpeg_segment(0xC0, sof) + jpeg_segment(0xC4, dht)
            + jpeg_segment(0xDA, sos) + bits.flush() + b"\xFF\xD9")


class Sample:
    """A valid upload and what the answer to it must look like."""

    def __init__(self, label, data, content_type, width, height, channels):
        self.label, self.data, self.content_type = label, data, content_type
        self.width, self.height, self.channels = width, height, channels


def make_samples(seed):
    samples = []
    for i, (w, h) in enumerate(SIZES):
        s = seed * 100 + i * 10
        samples.append(Sample(f"png-rgb-{w}x{h}", make_png(w, h, 3, s), "image/png", w, h, 3))
        samples.append(Sample(f"png-rgb-{w}x{h}-b", make_png(w, h, 3, s + 1), "image/png", w, h, 3))
        samples.append(Sample(f"png-grey-{w}x{h}", make_png(w, h, 1, s + 2), "image/png", w, h, 1))
        samples.append(Sample(f"png-rgba-{w}x{h}", make_png(w, h, 4, s + 3), "image/png", w, h, 4))
        samples.append(Sample(f"jpeg-{w}x{h}", make_jpeg(w, h, s + 4), "image/jpeg", w, h, 3))
    return samples


def check_png(data, width, height, channels):
    """None when `data` is a complete, consistent PNG of that size and channel count, else
    what is wrong with it."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f"no PNG signature (first bytes {data[:8]!r})"
    pos, idat, ihdr, seen_end = 8, [], None, False
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            return f"chunk {tag!r} truncated at byte {pos}"
        if struct.unpack(">I", crc)[0] != zlib.crc32(tag + body):
            return f"chunk {tag!r} at byte {pos} has a bad CRC"
        if ihdr is None and tag != b"IHDR":
            return f"first chunk is {tag!r}, not IHDR"
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if ihdr is None or not seen_end:
        return "no IHDR or no IEND"
    w, h, depth, color_type, _, _, interlace = ihdr
    want_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    if (w, h) != (width, height):
        return f"{w}x{h}, expected {width}x{height}"
    if color_type != want_type:
        return f"colour type {color_type}, expected {want_type} ({channels} channels)"
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        return f"IDAT does not inflate: {e}"
    if interlace == 0:
        per_pixel = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
        expected = h * (1 + (w * per_pixel * depth + 7) // 8)
        if len(raw) != expected:
            return f"IDAT inflates to {len(raw)} bytes, expected {expected}"
    return None


# ---------------------------------------------------------------------------------------
# requests


def multipart(fields, boundary=None):
    """fields: (name, bytes, filename or None, content type or None)."""
    boundary = boundary or "soak" + os.urandom(8).hex()
    out = bytearray()
    for name, value, filename, ctype in fields:
        out += f"--{boundary}\r\n".encode()
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += (disp + "\r\n").encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def upload_fields(sample, model):
    fields = [("image", sample.data, "in." + sample.content_type.split("/")[1], sample.content_type)]
    if model is not None:
        fields.append(("model", model.encode(), None, None))
    return fields


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Stats:
    """Everything the threads record, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = defaultdict(Counter)
        self.failures = defaultdict(list)
        self.failure_counts = Counter()
        self.jobs = {}
        self.rate_limited = 0
        self.job_outcomes = Counter()

    def record(self, kind, status):
        with self.lock:
            self.requests[kind][str(status)] += 1
            if status == 429:
                self.rate_limited += 1

    def fail(self, check, message):
        with self.lock:
            self.failure_counts[check] += 1
            if len(self.failures[check]) < 20:
                self.failures[check].append(f"{time.strftime('%H:%M:%S')} {message}")

    def accepted(self, job_id, kind, deadline):
        with self.lock:
            self.jobs[job_id] = {"kind": kind, "status": "accepted", "deadline": deadline, "settled": False}

    def settle(self, job_id, status, note=None):
        with self.lock:
            job = self.jobs[job_id]
            job["status"], job["settled"] = status, True
            if note:
                job["note"] = note
            self.job_outcomes[status] += 1


class Api:
    def __init__(self, port, stats, token, job_deadline):
        self.port, self.stats, self.token, self.job_deadline = port, stats, token, job_deadline

    def connection(self, timeout):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, kind, method, path, body=None, headers=None, timeout=180, conn=None):
        """One request on a fresh connection (or `conn`, already open); None on a transport
        error, which is recorded as a failure."""
        conn = conn or self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            answer_headers = {k.lower(): v for k, v in resp.getheaders()}
            status = resp.status
        except (OSError, http.client.HTTPException) as e:
            self.stats.record(kind, "error")
            self.stats.fail("transport", f"{kind}: {method} {path}: {type(e).__name__}: {e}")
            return None
        finally:
            conn.close()
        self.note(kind, method, path, status, answer_headers, data)
        return Response(status, answer_headers, data)

    def note(self, kind, method, path, status, headers, data):
        self.stats.record(kind, status)
        if status >= 500:
            self.stats.fail("5xx", f"{kind}: {method} {path} -> {status} {data[:300]!r}")
        if status == 429:
            retry = headers.get("retry-after", "")
            if not (retry.isdigit() and int(retry) >= 1):
                self.stats.fail("retry_after", f"{kind}: {method} {path} -> 429 with Retry-After {retry!r}")

    def upload(self, kind, path, fields, conn=None):
        body, ctype = multipart(fields)
        return self.call(kind, "POST", path, body, {"Content-Type": ctype}, conn=conn)

    def unexpected(self, kind, what, resp):
        self.stats.fail("unexpected_status", f"{kind}: {what} -> {resp.status} {resp.body[:300]!r}")

    def check_image(self, kind, resp, sample, model, scale):
        problem = check_png(resp.body, sample.width * scale, sample.height * scale, sample.channels)
        if problem is None and model is not None and resp.headers.get("x-superres-model") != model:
            problem = f"X-Superres-Model {resp.headers.get('x-superres-model')!r}, asked for {model!r}"
        if problem:
            self.stats.fail("bad_output", f"{kind}: {sample.label} with model {model or '(default)'}: {problem}")

    # -- jobs

    def follow(self, kind, job_id, use_events=True):
        """Waits for a job to reach a terminal status; answers its last view, or None when it
        was not seen terminal by the deadline (the job is then lost)."""
        deadline = self.stats.jobs[job_id]["deadline"]
        if use_events:
            view = self.events(kind, job_id, deadline)
            if view is not None and view.get("status") in TERMINAL:
                return view
        # No events, or the stream ended early: poll.
        while time.monotonic() < deadline:
            resp = self.call(kind + "/status", "GET", f"/v1/jobs/{job_id}", timeout=30)
            if resp is not None:
                if resp.status == 404:
                    return {"status": "vanished"}
                view = resp.json() or {}
                if resp.status == 200 and view.get("status") in TERMINAL:
                    return view
                if resp.status != 200:
                    self.unexpected(kind, f"GET /v1/jobs/{job_id}", resp)
            time.sleep(0.3)
        return None

    def events(self, kind, job_id, deadline):
        path = f"/v1/jobs/{job_id}/events"
        conn = self.connection(timeout=60)
        last = None
        try:
            conn.request("GET", path, headers={"Accept": "text/event-stream"})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status != 200:
                data = resp.read()
                self.note(kind + "/events", "GET", path, resp.status, headers, data)
                if resp.status != 404:
                    self.unexpected(kind, f"GET {path}", Response(resp.status, headers, data))
                return None
            self.stats.record(kind + "/events", 200)
            data_lines = []
            while time.monotonic() < deadline:
                line = resp.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line.startswith(b":"):
                    continue
                if line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                    continue
                if line == b"" and data_lines:
                    try:
                        last = json.loads(b"\n".join(data_lines))
                    except ValueError:
                        self.stats.fail("unexpected_status", f"{kind}: {path}: event is not JSON: {data_lines!r}")
                        return None
                    data_lines = []
                    if last.get("id") != job_id:
                        self.stats.fail("unexpected_status", f"{kind}: {path}: event of another job: {last}")
                    if last.get("status") in TERMINAL:
                        return last
        except (OSError, http.client.HTTPException) as e:
            self.stats.record(kind + "/events", "error")
            self.stats.fail("transport", f"{kind}: GET {path}: {type(e).__name__}: {e}")
        finally:
            conn.close()
        return last

    def submit(self, kind, fields, conn=None):
        """POST /v1/jobs; answers the job id when accepted."""
        resp = self.upload(kind, "/v1/jobs", fields, conn=conn)
        if resp is None:
            return None, None
        if resp.status in (201, 202):
            view = resp.json() or {}
            job_id = view.get("id")
            if not job_id:
                self.unexpected(kind, "POST /v1/jobs without an id", resp)
                return None, resp
            self.stats.accepted(job_id, kind, time.monotonic() + self.job_deadline)
            return job_id, resp
        return None, resp

    def finish_job(self, kind, job_id, sample, model, scale, use_events=True, expect_fail=False, forget=False):
        """Follows an accepted job to its end and checks its result; with `forget`, then
        deletes it (a finished job's DELETE answers it and forgets it: GET is then 404)."""
        self.follow_and_check(kind, job_id, sample, model, scale, use_events, expect_fail)
        if forget and self.stats.jobs[job_id]["status"] != "lost":
            resp = self.call(kind + "/delete", "DELETE", f"/v1/jobs/{job_id}", timeout=30)
            if resp is not None and not (resp.status == 200 and (resp.json() or {}).get("status") in TERMINAL):
                self.unexpected(kind, f"DELETE of finished job {job_id}", resp)
            after = self.call(kind + "/status", "GET", f"/v1/jobs/{job_id}", timeout=30)
            if after is not None and after.status != 404:
                self.unexpected(kind, f"GET /v1/jobs/{job_id} after deleting it finished", after)

    def follow_and_check(self, kind, job_id, sample, model, scale, use_events, expect_fail):
        view = self.follow(kind, job_id, use_events)
        if view is None:
            self.stats.fail("lost_job", f"{kind}: job {job_id} not terminal after {self.job_deadline} s")
            self.stats.settle(job_id, "lost")
            return
        status = view.get("status")
        if status == "vanished":
            self.stats.fail("lost_job", f"{kind}: job {job_id} vanished (404) before it was seen terminal")
            self.stats.settle(job_id, "lost")
            return
        resp = self.call(kind + "/result", "GET", f"/v1/jobs/{job_id}/result", timeout=60)
        if resp is None:
            self.stats.settle(job_id, "lost", "result request failed")
            self.stats.fail("lost_job", f"{kind}: job {job_id} {status}, its result could not be fetched")
            return
        if status == "done":
            if resp.status == 200:
                if expect_fail:
                    self.unexpected(kind, f"hostile job {job_id} ended done", resp)
                else:
                    self.check_image(kind, resp, sample, model, scale)
                self.stats.settle(job_id, "done")
            else:
                self.stats.fail("lost_job", f"{kind}: job {job_id} done but GET result -> {resp.status} {resp.body[:200]!r}")
                self.stats.settle(job_id, "lost", "result missing")
        elif status == "cancelled":
            if resp.status != 409:
                self.unexpected(kind, f"GET result of cancelled job {job_id}", resp)
            self.stats.settle(job_id, "cancelled")
        else:  # failed
            if not expect_fail:
                self.unexpected(kind, f"valid job {job_id} failed ({view.get('error')})", resp)
            elif not 400 <= resp.status < 500:
                self.unexpected(kind, f"result of hostile job {job_id} is not a 4xx", resp)
            self.stats.settle(job_id, "failed")


# ---------------------------------------------------------------------------------------
# traffic


class Traffic:
    def __init__(self, args, api, stats, samples, large, models, model_names, stop_at):
        self.args, self.api, self.stats, self.samples, self.large = args, api, stats, samples, large
        self.models = models  # name -> its entry in GET /v1/models
        self.default_model = next(n for n, m in models.items() if m["default"])
        self.model_names = model_names
        self.stop_at = stop_at
        self.interrupted = threading.Event()

    def running(self):
        return time.monotonic() < self.stop_at and not self.interrupted.is_set()

    def guarded(self, fn, *args):
        """`fn(*args)` for a thread: an exception (a bug of this script) is a failure."""
        def body():
            try:
                fn(*args)
            except Exception as e:
                if not self.interrupted.is_set():
                    self.stats.fail("driver", f"{threading.current_thread().name}: {type(e).__name__}: {e}")
        return body

    def pause(self, seconds):
        end = min(self.stop_at, time.monotonic() + seconds)
        while time.monotonic() < end and not self.interrupted.is_set():
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def pick(self, rng):
        """A valid sample and the model to name (None: the server's default), with its scale."""
        sample = rng.choice(self.samples)
        model = rng.choice(self.model_names + [None]) if self.default_model in self.model_names else rng.choice(self.model_names)
        scale = self.models[model or self.default_model]["scale"]
        return sample, model, scale

    # -- valid traffic

    def client(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        actions = [(self.enhance, 30), (self.job, 30), (self.job_polled, 6), (self.cancel, 14), (self.abandon, 4)]
        funcs, weights = zip(*actions)
        while self.running():
            rng.choices(funcs, weights)[0](rng)

    def enhance(self, rng, kind="enhance", conn=None):
        sample, model, scale = self.pick(rng)
        resp = self.api.upload(kind, "/enhance", upload_fields(sample, model), conn=conn)
        if resp is None or resp.status == 429:
            return
        if resp.status == 200:
            self.api.check_image(kind, resp, sample, model, scale)
        else:
            self.api.unexpected(kind, f"POST /enhance {sample.label}", resp)

    def job(self, rng, kind="job", use_events=True, conn=None, peek=False):
        sample, model, scale = self.pick(rng)
        job_id, resp = self.api.submit(kind, upload_fields(sample, model), conn=conn)
        if job_id is None:
            if resp is not None and resp.status != 429:
                self.api.unexpected(kind, f"POST /v1/jobs {sample.label}", resp)
            return
        if peek:
            early = self.api.call(kind + "/result", "GET", f"/v1/jobs/{job_id}/result", timeout=30)
            if early is not None and early.status not in (200, 409):
                self.api.unexpected(kind, f"GET result of job {job_id} while in flight", early)
        self.api.finish_job(kind, job_id, sample, model, scale, use_events)

    def job_polled(self, rng):
        self.job(rng, kind="job_polled", use_events=False, peek=True)

    def cancel(self, rng):
        """Three large jobs at once, so that both workers are busy and the third waits: the
        third is cancelled at once (queued), the first after a random delay (running or
        finished by then), the second followed to its end and then deleted (forgotten)."""
        kind = "cancel"
        jobs = []
        for _ in range(3):
            _, model, scale = self.pick(rng)
            job_id, resp = self.api.submit(kind, upload_fields(self.large, model))
            if job_id is None:
                if resp is not None and resp.status != 429:
                    self.api.unexpected(kind, f"POST /v1/jobs {self.large.label}", resp)
                continue
            jobs.append((job_id, model, scale))
        if not jobs:
            return
        self.delete(kind, *jobs[-1])
        if len(jobs) > 1:
            time.sleep(rng.choice([0, 0.02, 0.05, 0.1, 0.3]))
            self.delete(kind, *jobs[0])
        if len(jobs) > 2:
            job_id, model, scale = jobs[1]
            self.api.finish_job(kind, job_id, self.large, model, scale, forget=True)

    def delete(self, kind, job_id, model, scale):
        """DELETE an accepted job, then check what it became."""
        sample = self.large
        resp = self.api.call(kind + "/delete", "DELETE", f"/v1/jobs/{job_id}", timeout=30)
        if resp is None:
            self.api.finish_job(kind, job_id, sample, model, scale, forget=True)
            return
        view = resp.json() or {}
        status = view.get("status")
        if resp.status == 404:
            self.stats.fail("lost_job", f"{kind}: DELETE of in-flight job {job_id} -> 404")
            self.stats.settle(job_id, "lost")
        elif resp.status != 200:
            self.api.unexpected(kind, f"DELETE /v1/jobs/{job_id}", resp)
            self.api.finish_job(kind, job_id, sample, model, scale, forget=True)
        elif status == "cancelled":
            after = self.api.call(kind + "/status", "GET", f"/v1/jobs/{job_id}", timeout=30)
            if after is not None and (after.status != 200 or (after.json() or {}).get("status") != "cancelled"):
                self.api.unexpected(kind, f"GET /v1/jobs/{job_id} after cancelling it", after)
            result = self.api.call(kind + "/result", "GET", f"/v1/jobs/{job_id}/result", timeout=30)
            if result is not None and result.status != 409:
                self.api.unexpected(kind, f"GET result of cancelled job {job_id}", result)
            self.stats.settle(job_id, "cancelled")
        elif status in ("done", "failed"):
            # It had finished: the DELETE forgot it.
            after = self.api.call(kind + "/status", "GET", f"/v1/jobs/{job_id}", timeout=30)
            if after is not None and after.status != 404:
                self.api.unexpected(kind, f"GET /v1/jobs/{job_id} after deleting it finished", after)
            if status == "failed":
                self.api.unexpected(kind, f"valid job {job_id} failed ({view.get('error')})", resp)
            self.stats.settle(job_id, status)
        elif status == "running":
            # It stops at its next tile, or finishes when this was its last.
            self.api.finish_job(kind, job_id, sample, model, scale, forget=True)
        else:
            self.api.unexpected(kind, f"DELETE /v1/jobs/{job_id} answered status {status!r}", resp)
            self.api.finish_job(kind, job_id, sample, model, scale, forget=True)

    def abandon(self, rng):
        """An /enhance client that hangs up while its image waits or runs."""
        sample, model, _ = self.pick(rng)
        body, ctype = multipart(upload_fields(sample, model))
        try:
            with socket.create_connection(("127.0.0.1", self.api.port), timeout=10) as s:
                s.sendall(b"POST /enhance HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype.encode()
                          + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                time.sleep(rng.choice([0.01, 0.1, 0.3, 1.0]))
        except OSError as e:
            self.stats.record("enhance_abandoned", "error")
            self.stats.fail("transport", f"enhance_abandoned: {type(e).__name__}: {e}")
            return
        self.stats.record("enhance_abandoned", "closed")

    # -- hostile uploads

    def hostile_cases(self):
        png = make_png(96, 96, 3, 7)
        big = (png_header(2000, 2000) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 5000)) + png_chunk(b"IEND", b""))
        huge = png_header(100_000, 100_000) + png_chunk(b"IEND", b"")
        rnd = random.Random(self.args.seed)
        garbage = [bytes([0]) + rnd.randbytes(n) for n in (1, 17, 600, 5000)]
        image = lambda data, ctype="image/png": [("image", data, "x.png", ctype)]  # noqa: E731
        # (label, how to send it, whether /v1/jobs may accept it: its header is sound)
        cases = [
            ("truncated_png", ("multipart", image(png[: len(png) * 2 // 3])), True),
            ("truncated_png_header_only", ("multipart", image(png[:60])), True),
            ("truncated_in_ihdr", ("multipart", image(png[:20])), False),
            ("truncated_claims_2000x2000", ("multipart", image(big)), True),
            ("claims_100000x100000", ("multipart", image(huge)), False),
            ("empty_image_field", ("multipart", image(b"")), False),
            ("no_image_field", ("multipart", [("model", b"tiny", None, None)]), False),
            ("huge_text_field", ("multipart", image(png) + [("model", b"m" * 100_000, None, None)]), False),
            ("unknown_model", ("multipart", image(png) + [("model", b"no-such-model", None, None)]), False),
            ("bad_format_field", ("multipart", image(png) + [("format", b"bmp-ish", None, None)]), False),
            ("empty_body", ("raw", b"", "multipart/form-data; boundary=xyz"), False),
            ("not_multipart_png_body", ("raw", png, "image/png"), False),
            ("json_body", ("raw", b'{"image": "aGVsbG8="}', "application/json"), False),
            ("multipart_without_boundary", ("raw", multipart(image(png))[0], "multipart/form-data"), False),
            ("malformed_multipart", ("raw", b"--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
                                     + png[:100], "multipart/form-data; boundary=xyz"), False),
        ]
        cases += [(f"random_bytes_{len(g)}", ("multipart", image(g, "application/octet-stream")), False) for g in garbage]
        return cases

    def hostile(self):
        rng = random.Random(self.args.seed + 17)
        cases = self.hostile_cases()
        while self.running():
            label, (how, *what), job_may_accept = rng.choice(cases)
            path = rng.choice(["/enhance", "/enhance", "/v1/jobs"])
            kind = "hostile" + ("_job" if path == "/v1/jobs" else "")
            if how == "multipart":
                body, ctype = multipart(what[0])
            else:
                body, ctype = what
            resp = self.api.call(kind, "POST", path, body, {"Content-Type": ctype})
            if resp is not None:
                if path == "/v1/jobs" and resp.status == 202 and job_may_accept:
                    job_id = (resp.json() or {}).get("id")
                    self.stats.accepted(job_id, kind, time.monotonic() + self.args.job_deadline)
                    self.api.finish_job(kind, job_id, None, None, 1, expect_fail=True)
                elif not 400 <= resp.status < 500:
                    self.api.unexpected(kind, f"{label} to {path}", resp)
                    job_id = (resp.json() or {}).get("id") if resp.status == 202 else None
                    if job_id:
                        self.stats.accepted(job_id, kind, time.monotonic() + self.args.job_deadline)
                        self.api.finish_job(kind, job_id, None, None, 1, expect_fail=True)
            self.pause(rng.uniform(0.05, 0.4))

    # -- admin and the open endpoints

    def admin(self, model_files):
        rng = random.Random(self.args.seed + 29)
        n = 0
        while self.running():
            n += 1
            if n % 2 == 0:
                now = time.time()
                for f in model_files:
                    os.utime(f, (now, now))
            resp = self.api.call("reload", "POST", "/v1/models/reload", headers={"Authorization": f"Bearer {self.api.token}"}, timeout=120)
            if resp is not None:
                report = resp.json() or {}
                names = sorted(m.get("name") for m in report.get("models", []))
                if resp.status != 200:
                    self.api.unexpected("reload", "POST /v1/models/reload", resp)
                elif report.get("errors") or names != sorted(self.models):
                    self.stats.fail("unexpected_status", f"reload: models {names}, errors {report.get('errors')}")
            for kind, headers, want in (("reload_bad_token", {"Authorization": "Bearer wrong"}, 403), ("reload_no_token", {}, 401)):
                resp = self.api.call(kind, "POST", "/v1/models/reload", headers=headers)
                if resp is not None and resp.status != want:
                    self.api.unexpected(kind, "POST /v1/models/reload", resp)
            for path, want in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200), ("/v1/models", 200),
                               ("/v1/devices", 200), ("/v1/jobs/0123456789abcdef", 404), ("/no/such/page", 404)):
                resp = self.api.call("probe", "GET", path, timeout=30)
                if resp is not None and resp.status != want:
                    self.api.unexpected("probe", f"GET {path}", resp)
            self.pause(rng.uniform(0.5, 1.5) * self.args.reload_every)

    # -- bursts

    def bursts(self):
        rng = random.Random(self.args.seed + 41)
        self.pause(min(5.0, self.args.burst_every / 2))
        while self.running():
            self.burst(rng)
            self.pause(rng.uniform(0.7, 1.3) * self.args.burst_every)

    def burst(self, rng):
        n = self.args.burst_size
        barrier = threading.Barrier(n)
        seeds = [rng.randrange(1 << 30) for _ in range(n)]

        def one(i):
            r = random.Random(seeds[i])
            conn = self.api.connection(timeout=180)
            try:
                conn.connect()
            except OSError as e:
                self.stats.record("burst", "error")
                self.stats.fail("transport", f"burst: connect: {e}")
                barrier.abort()
                return
            try:
                barrier.wait(timeout=30)
            except threading.BrokenBarrierError:
                pass
            if i % 2:
                self.enhance(r, kind="burst_enhance", conn=conn)
            else:
                self.job(r, kind="burst_job", conn=conn)

        threads = [threading.Thread(target=self.guarded(one, i), daemon=True, name=f"burst{i}") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


# ---------------------------------------------------------------------------------------
# the server and its resources


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_proc(pid):
    """(RSS KiB, open descriptors, threads) of a live process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: it has exited
        return None
    return int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"])


class Sampler(threading.Thread):
    def __init__(self, pid, interval, t0):
        super().__init__(daemon=True)
        self.pid, self.interval, self.t0 = pid, interval, t0
        self.samples = []  # (seconds since traffic start, rss KiB, fds, threads)
        self.halt = threading.Event()

    def sample(self):
        got = read_proc(self.pid)
        if got:
            self.samples.append((round(time.monotonic() - self.t0, 2),) + got)
        return got

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)


def growth_windows(duration, interval):
    warmup = max(0.2 * duration, min(30.0, 0.4 * duration))
    window = min(max(0.1 * duration, 15 * interval), 0.3 * duration)
    return warmup, window


def judge_growth(samples, duration, interval, max_growth):
    """Per metric: the value at warm-up end, at the end, the growth and whether it passed."""
    warmup, window = growth_windows(duration, interval)
    base = [s for s in samples if warmup <= s[0] <= warmup + window]
    end = [s for s in samples if duration - window <= s[0] <= duration]
    out = {"warmup_s": round(warmup, 1), "window_s": round(window, 1), "samples": len(samples),
           "warmup_end_samples": len(base), "end_samples": len(end)}
    for i, name, rule in ((1, "rss_kib", "median"), (2, "fds", "max"), (3, "threads", "max")):
        if len(base) < 2 or len(end) < 2:
            out[name] = {"warmup_end": None, "end": None, "growth_pct": None, "ok": False,
                         "rule": "too few samples to judge: run longer"}
            continue
        ref = statistics.median(s[i] for s in base) if rule == "median" else max(s[i] for s in base)
        ref, last = (int(v) if float(v).is_integer() else round(v, 1) for v in (ref, statistics.median(s[i] for s in end)))
        g = (last - ref) / ref * 100 if ref else 0.0
        # Descriptors and threads are small whole numbers that move by one with a
        # connection or a pooled blocking thread (tokio keeps one alive for 10 s after
        # use): one more is within the limit however small the base; a leak grows on.
        slack = 1 if rule == "max" else 0
        ok = g <= max_growth * 100 or last - ref <= slack
        out[name] = {"warmup_end": ref, "end": last, "growth_pct": round(g, 2), "ok": ok,
                     "rule": f"median(end) vs {rule}(warm-up end)" + (", +1 allowed" if slack else "")}
    return out


class Server:
    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        self.proc = None
        self.log_path = Path(args.log) if args.log else workdir / "server.log"
        self.pid_file = workdir / "server.pid"

    def prepare_models(self):
        models = self.workdir / "models"
        models.mkdir(exist_ok=True)
        wanted = [(Path(self.args.shared) / "models/synthetic/EDSR_B2F16_x2.pb", "tiny.pb"),
                  (Path(self.args.repo) / "models/default_x3.onnx", "default.onnx")]
        files = []
        for src, name in wanted:
            if src.is_file():
                shutil.copyfile(src, models / name)
                files.append(models / name)
            else:
                print(f"soak: {src} not found: serving without {name}", file=sys.stderr)
        if not files:
            raise SystemExit("soak: no model to serve (neither the tiny shared model nor models/default_x3.onnx)")
        return models, files

    def start(self, models_dir):
        token = os.urandom(TOKEN_BYTES).hex()
        token_file = self.workdir / "admin-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SUPERRES_") or k in ("SUPERRES_CUDA_LIBS", "SUPERRES_CACHE_DIR", "SUPERRES_LOG")}
        env.setdefault("SUPERRES_LOG", "info,tower_http=warn")
        for attempt in range(3):
            port = free_port()
            cmd = [self.args.bin, "serve", "--bind", f"127.0.0.1:{port}", "--models", str(models_dir),
                   "--admin-token-file", str(token_file), "--queue-size", "4", "--workers", "2",
                   "--result-ttl-secs", str(RESULT_TTL_S)]
            log = open(self.log_path, "a")
            # Its own session: a Ctrl-C at the terminal reaches this script, which stops the
            # server itself, rather than the server draining on its own mid-run.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            self.pid_file.write_text(str(self.proc.pid))
            if self.wait_ready(port):
                return port, token, cmd
            if self.proc.poll() is not None and "in use" in self.log_path.read_text(errors="replace") and attempt < 2:
                continue
            break
        return None, token, cmd

    def wait_ready(self, port):
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.3)
        return False

    def stop(self, timeout):
        """SIGTERM; answers (exit status or None, seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None), 0.0
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - t

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------
# report


def summary(report):
    lines = []
    cfg = report["config"]
    lines.append(f"soak: {cfg['minutes']} min against {cfg['bin']} ({cfg['traffic_s']:.0f} s of traffic)")
    lines.append(f"      {' '.join(cfg['command'][1:])}")
    lines.append("")
    statuses = sorted({s for c in report["requests"].values() for s in c}, key=lambda s: (not s.isdigit(), s))
    kinds = sorted(report["requests"])
    width = max([len(k) for k in kinds] + [8])
    lines.append("requests".ljust(width) + "".join(s.rjust(8) for s in statuses) + "   total".rjust(8))
    totals = Counter()
    for k in kinds:
        c = report["requests"][k]
        totals.update(c)
        lines.append(k.ljust(width) + "".join(str(c.get(s, "")).rjust(8) for s in statuses) + str(sum(c.values())).rjust(8))
    lines.append("all".ljust(width) + "".join(str(totals.get(s, "")).rjust(8) for s in statuses) + str(sum(totals.values())).rjust(8))
    lines.append("")
    j = report["jobs"]
    lines.append(f"jobs accepted {j['accepted']}: done {j['done']}, cancelled {j['cancelled']}, failed {j['failed']} "
                 f"(hostile, expected: {j['failed_hostile']}), lost {j['lost']}")
    lines.append(f"429 answers: {report['rate_limited']}")
    lines.append("")
    r = report["resources"]
    lines.append(f"resources (warm-up {r['warmup_s']} s, windows of {r['window_s']} s, {r['samples']} samples):")
    lines.append(f"  {'':9}{'warm-up end':>14}{'end':>12}{'growth':>10}  rule")
    for name, label in (("rss_kib", "RSS KiB"), ("fds", "fds"), ("threads", "threads")):
        m = r[name]
        g = "n/a" if m["growth_pct"] is None else f"{m['growth_pct']:+.1f}%"
        lines.append(f"  {label:9}{str(m['warmup_end']):>14}{str(m['end']):>12}{g:>10}  {m['rule']}{'' if m['ok'] else '  FAIL'}")
    idle = report.get("idle", {})
    if idle.get("before") and idle.get("after"):
        lines.append(f"  idle before the traffic: RSS {idle['before'][0]} KiB, {idle['before'][1]} fds, {idle['before'][2]} threads; "
                     f"after it (results expired): RSS {idle['after'][0]} KiB, {idle['after'][1]} fds, {idle['after'][2]} threads")
    sd = report["shutdown"]
    lines.append(f"shutdown: SIGTERM -> exit status {sd['exit_status']} after {sd['seconds']:.1f} s")
    lines.append("")
    if report["ok"]:
        lines.append("PASS: every check passed")
    else:
        lines.append("FAIL: " + ", ".join(f"{f['check']} ({f['count']})" for f in report["failures"]))
        for f in report["failures"]:
            for e in f["examples"]:
                lines.append(f"  {f['check']}: {e}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, required=True, help="traffic time, in minutes (e.g. 30, or 0.5)")
    p.add_argument("--bin", default=os.environ.get("SUPERRES_BIN", "target/release/superres"))
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--shared", default=None, help="shared assets [$SUPERRES_SHARED or REPO/../shared]")
    p.add_argument("--workdir", default=None, help="temporary folder (made and removed when not given)")
    p.add_argument("--json", default=None, help="write the report as JSON to this file")
    p.add_argument("--log", default=None, help="write the server's log to this file")
    p.add_argument("--clients", type=int, default=3, help="threads of valid traffic [3]")
    p.add_argument("--burst-size", type=int, default=16, help="uploads released at once in a burst [16]")
    p.add_argument("--burst-every", type=float, default=15, help="seconds between bursts [15]")
    p.add_argument("--reload-every", type=float, default=6, help="seconds between reloads [6]")
    p.add_argument("--job-deadline", type=float, default=180, help="seconds an accepted job has to end [180]")
    p.add_argument("--request-models", default=None, help="comma-separated model names requests name [every model served]")
    p.add_argument("--sample-every", type=float, default=None, help="seconds between resource samples [D/120, 1..5]")
    p.add_argument("--max-growth", type=float, default=0.10, help="largest allowed growth, a fraction [0.10]")
    p.add_argument("--start-timeout", type=float, default=120)
    p.add_argument("--exit-timeout", type=float, default=60, help="seconds the server has to exit after SIGTERM [60]")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if not args.minutes > 0:
        p.error("--minutes must be positive")
    if not (Path(args.bin).is_file() and os.access(args.bin, os.X_OK)):
        print(f"soak: no superres binary at {args.bin}: build it with `cargo build --release --bin superres`", file=sys.stderr)
        return 2
    args.bin = str(Path(args.bin).resolve())
    args.shared = args.shared or os.environ.get("SUPERRES_SHARED") or str(Path(args.repo) / ".." / "shared")

    own_workdir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="superres-soak."))
    workdir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, _frame):
        # Once: a second signal (the wrapper passes Ctrl-C on as SIGTERM) must not cut the
        # server's shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = Server(args, workdir)
    live = {}  # what run() has started, for an interruption to stop
    try:
        return run(args, server, live)
    except Interrupted as e:
        print(f"\nsoak: interrupted ({e}): stopping the server", file=sys.stderr)
        if "traffic" in live:
            live["traffic"].interrupted.set()
        if "sampler" in live:
            live["sampler"].halt.set()
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.kill()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, server, live):
    duration = args.minutes * 60
    interval = args.sample_every or min(5.0, max(1.0, duration / 120))
    print("soak: making the test images", flush=True)
    samples = make_samples(args.seed)
    large = Sample(f"png-rgb-{LARGE[0]}x{LARGE[1]}", make_png(*LARGE, 3, args.seed), "image/png", *LARGE, 3)
    models_dir, model_files = server.prepare_models()
    stats = Stats()
    port, token, cmd = server.start(models_dir)
    report = {"config": {"minutes": args.minutes, "bin": args.bin, "command": cmd, "clients": args.clients,
                         "burst_size": args.burst_size, "burst_every_s": args.burst_every,
                         "reload_every_s": args.reload_every, "job_deadline_s": args.job_deadline,
                         "sample_every_s": interval, "max_growth_pct": args.max_growth * 100, "seed": args.seed,
                         "traffic_s": duration}}
    if port is None:
        stats.fail("startup", f"the server did not become ready within {args.start_timeout} s:\n{server.log_tail()}")
        return finish(args, report, stats, [], duration, interval, {}, (None, 0.0), server)
    api = Api(port, stats, token, args.job_deadline)
    models_resp = api.call("probe", "GET", "/v1/models")
    models = {m["name"]: m for m in (models_resp.json() or {}).get("models", [])} if models_resp else {}
    if not models:
        stats.fail("startup", "GET /v1/models listed no model")
        return finish(args, report, stats, [], duration, interval, {}, server.stop(args.exit_timeout), server)
    names = [n.strip() for n in args.request_models.split(",")] if args.request_models else sorted(models)
    unknown = [n for n in names if n not in models]
    if unknown:
        print(f"soak: --request-models names {unknown}, not served (served: {sorted(models)})", file=sys.stderr)
        server.kill()
        return 2
    report["config"]["models"] = {n: {"scale": m["scale"], "family": m["family"], "default": m["default"]} for n, m in models.items()}
    report["config"]["request_models"] = names
    print(f"soak: server pid {server.proc.pid} on 127.0.0.1:{port}; models "
          + ", ".join(f"{n} (x{m['scale']}{', default' if m['default'] else ''})" for n, m in sorted(models.items()))
          + f"; {duration:.0f} s of traffic, samples every {interval:g} s", flush=True)

    idle = {"before": read_proc(server.proc.pid)}
    t0 = time.monotonic()
    traffic = Traffic(args, api, stats, samples, large, models, names, t0 + duration)
    live["traffic"] = traffic
    sampler = Sampler(server.proc.pid, interval, t0)
    live["sampler"] = sampler
    sampler.start()
    threads = [threading.Thread(target=traffic.guarded(traffic.client, i), daemon=True, name=f"client{i}") for i in range(args.clients)]
    threads += [threading.Thread(target=traffic.guarded(traffic.hostile), daemon=True, name="hostile"),
                threading.Thread(target=traffic.guarded(traffic.admin, model_files), daemon=True, name="admin"),
                threading.Thread(target=traffic.guarded(traffic.bursts), daemon=True, name="bursts")]
    for t in threads:
        t.start()
    next_progress = min(30.0, max(5.0, duration / 10))
    progress_every = next_progress
    while time.monotonic() < t0 + duration:
        time.sleep(min(0.5, max(0.0, t0 + duration - time.monotonic())))
        if server.proc.poll() is not None:
            stats.fail("exit", f"the server exited during the run with status {server.proc.returncode}:\n{server.log_tail()}")
            traffic.interrupted.set()
            break
        elapsed = time.monotonic() - t0
        if elapsed >= next_progress:
            next_progress += progress_every
            with stats.lock:
                total = sum(sum(c.values()) for c in stats.requests.values())
                outcomes = dict(stats.job_outcomes)
                limited = stats.rate_limited
                fails = sum(stats.failure_counts.values())
            last = sampler.samples[-1] if sampler.samples else (0, "?", "?", "?")
            print(f"  {elapsed:6.0f} s: {total} requests, jobs {outcomes}, {limited} x 429, "
                  f"RSS {last[1]} KiB, {last[2]} fds, {last[3]} threads, {fails} failures", flush=True)
    sampler.halt.set()
    sampler.join()
    print("soak: traffic over; waiting for the jobs in flight", flush=True)
    join_by = time.monotonic() + args.job_deadline + 60
    for t in threads:
        t.join(max(0.0, join_by - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        stats.fail("lost_job", f"threads still waiting on the server {args.job_deadline + 60:.0f} s after the traffic: {stuck}")
    with stats.lock:
        unsettled = [(i, j) for i, j in stats.jobs.items() if not j["settled"]]
    for job_id, job in unsettled:
        stats.fail("lost_job", f"{job['kind']}: job {job_id} never seen terminal")
        stats.settle(job_id, "lost")

    if server.proc.poll() is None:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            resp = api.call("probe", "GET", "/readyz", timeout=10)
            state = resp.json() if resp is not None else None
            if state and state.get("queued") == 0 and state.get("running") == 0:
                break
            time.sleep(0.5)
        else:
            stats.fail("not_idle", f"/readyz 30 s after the traffic: {state}")
        # Once the last results have expired (a request sweeps them), what the idle server holds.
        time.sleep(RESULT_TTL_S + 2)
        api.call("probe", "GET", "/v1/jobs/0123456789abcdef", timeout=10)
        time.sleep(1)
        idle["after"] = read_proc(server.proc.pid)
        # Every result has expired or was handed over, so the store must hold nothing.
        resp = api.call("probe", "GET", "/metrics", timeout=10)
        text = resp.body.decode("utf-8", "replace") if resp is not None else ""
        held = [l for l in text.splitlines() if l.startswith("superres_result_store_bytes")]
        if not held or float(held[0].split()[-1]) != 0:
            stats.fail("result_store", f"the idle server's result store is not empty: {held or 'no gauge'}")
    shutdown = server.stop(args.exit_timeout)
    return finish(args, report, stats, sampler.samples, duration, interval, idle, shutdown, server)


def finish(args, report, stats, samples, duration, interval, idle, shutdown, server):
    code, seconds = shutdown
    if code != 0 and "exit" not in stats.failure_counts:
        what = "did not exit" if code is None else f"exited with status {code}"
        stats.fail("exit", f"after SIGTERM the server {what} within {args.exit_timeout:.0f} s:\n{server.log_tail(15)}")
    if code is None:
        server.kill()
    try:
        log = server.log_path.read_text(errors="replace")
    except OSError:
        log = ""
    panics = [line for line in log.splitlines() if "panicked at" in line]
    if panics:
        stats.fail("panic", f"{len(panics)} panic(s) in the server log, first: {panics[0][:300]}")
    resources = judge_growth(samples, duration, interval, args.max_growth)
    for name in ("rss_kib", "fds", "threads"):
        m = resources[name]
        if not m["ok"] and "startup" not in stats.failure_counts:
            check = "growth_" + name.split("_")[0]
            stats.fail(check, f"{name}: {m['warmup_end']} at warm-up end, {m['end']} at the end "
                              f"({m['growth_pct']}%, limit {args.max_growth * 100:.0f}%; {m['rule']})")
    if stats.rate_limited == 0 and "startup" not in stats.failure_counts:
        stats.fail("no_429", "no request got 429: the bursts never overloaded the queue")
    with stats.lock:
        hostile_failed = sum(1 for j in stats.jobs.values() if j["kind"].startswith("hostile") and j["status"] == "failed")
        report.update({
            "requests": {k: dict(c) for k, c in sorted(stats.requests.items())},
            "jobs": {"accepted": len(stats.jobs), "done": stats.job_outcomes["done"],
                     "cancelled": stats.job_outcomes["cancelled"], "failed": stats.job_outcomes["failed"],
                     "failed_hostile": hostile_failed, "lost": stats.job_outcomes["lost"]},
            "rate_limited": stats.rate_limited,
            "resources": resources,
            "idle": {"before": idle.get("before"), "after": idle.get("after")},
            "shutdown": {"exit_status": code, "seconds": round(seconds, 2)},
            "failures": [{"check": c, "count": n, "examples": stats.failures[c]} for c, n in sorted(stats.failure_counts.items())],
            "samples": samples,
        })
    report["ok"] = not report["failures"]
    print()
    print(summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nsoak: report written to {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
