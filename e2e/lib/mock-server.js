// A stand-in for the superres HTTP API, serving the real page assets. It lets the page
// tests drive every error path (413/415/422/429/503, failed and cancelled jobs) without
// a model, and in a fixed, fast time. Videos are told by content as the server does; their
// jobs count frames, and their result is `mock.videoResult` (or the upload itself). Start
// it with `node e2e/lib/mock-server.js [port]` to work on the page by hand.
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { encodePng, pngSize } = require('./png');

const ASSETS = path.join(__dirname, '..', '..', 'crates', 'server', 'assets');
const TYPES = { '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'] };

/** The container a video upload is in, by its first bytes as the server sniffs them; else null. */
function videoContainer(buf) {
  const at = (i, m) => buf.length >= i + m.length && buf.subarray(i, i + m.length).equals(Buffer.from(m));
  if (at(4, 'ftyp')) return 'mp4';
  if (at(0, [0x1a, 0x45, 0xdf, 0xa3])) return 'mkv';
  if (at(0, 'RIFF') && at(8, 'AVI ')) return 'avi';
  if (at(0, [0x47]) && buf[188] === 0x47) return 'ts';
  if (at(0, [0x00, 0x00, 0x01, 0xba])) return 'mpeg';
  if (at(0, 'FLV')) return 'flv';
  if (at(0, 'OggS')) return 'ogg';
  return null;
}

/** Why the server's probe would refuse a video, or null. An MP4 cut short lacks its index
 *  (ffmpeg writes the `moov` box last), which is what the page tests send as a damaged one. */
function damaged(buf, container) {
  if (container === 'mp4' && buf.indexOf('moov') < 0) return 'moov atom not found';
  return null;
}

const VIDEO_FORMATS = { mp4: 'video/mp4', webm: 'video/webm', mkv: 'video/x-matroska' };
const IMAGE_FORMATS = ['png', 'jpeg', 'jpg', 'webp'];

/** A `Range: bytes=a-b` header as `[start, end]` (inclusive) within `size`; null if absent or unsatisfiable. */
function byteRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header || '');
  if (!m || (!m[1] && !m[2])) return null;
  const start = m[1] ? Number(m[1]) : Math.max(0, size - Number(m[2]));
  const end = m[1] && m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
  return start <= end && start < size ? [start, end] : null;
}

/** The `image` part of a multipart body, and the other fields as strings. */
function parseMultipart(body, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType || '');
  if (!m) return null;
  const boundary = Buffer.from(`--${m[1] || m[2]}`);
  const fields = {};
  let pos = body.indexOf(boundary);
  while (pos >= 0) {
    const start = pos + boundary.length + 2;
    const next = body.indexOf(boundary, start);
    if (next < 0) break;
    const part = body.subarray(start, next - 2);
    const headEnd = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, headEnd).toString();
    const name = /name="([^"]*)"/.exec(head);
    if (name) {
      const data = part.subarray(headEnd + 4);
      fields[name[1]] = name[1] === 'image' ? data : data.toString();
    }
    pos = next;
  }
  return fields;
}

/**
 * Starts the mock on `port` (0: any). `opts.scale` is the model's scale; `opts.stepMs`
 * the time between job events. `server.mock.next` (an array) makes the next uploads
 * answer errors instead: `{status, error, code, retryAfter}` or `{fail: "message"}`, or
 * `{framesTotal: null}` for a video whose frame count is unknown, `{result: {format, bytes}}`
 * for a video result other than the usual (another container than asked). For videos, `mock`
 * holds `videos` (false: no ffmpeg, 415), `maxVideoBytes` (the `--max-video-mb` limit),
 * `videoFrames` (each video's frame count) and `videoResult` (the bytes every video job
 * returns; null: the upload). `mock.lastFields` is the last upload's text fields.
 */
function startMock(port = 0, opts = {}) {
  const scale = opts.scale || 3;
  const stepMs = opts.stepMs ?? 120;
  const jobs = new Map();
  // `mock.devices` is what /v1/devices answers: the CPU unless a test sets a GPU.
  const mock = { next: [], ready: opts.ready ?? true, jobs, uploads: 0, lastFields: null,
    videos: true, maxVideoBytes: 200 * 1000 * 1000, videoFrames: 10, videoResult: null, devices: {
    backend: 'cpu (avx2, 2 threads)', precision: 'exact',
    devices: [{ id: 'cpu', name: 'avx2, 2 threads', memory_total_bytes: null, memory_used_bytes: null, utilisation_percent: null }],
  } };
  let seq = 0;

  const json = (res, status, obj, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(obj));
  };
  const view = (j) => ({ id: j.id, kind: j.kind, status: j.status, progress: j.progress, position: j.position,
    frames_done: j.framesDone, frames_total: j.framesTotal, error: j.error });
  const emit = (j) => { for (const s of j.subscribers) s.write(`data: ${JSON.stringify(view(j))}\n\n`); };

  /** A running job a quarter further on: an image's tiles, or a video's frames. */
  function advance(j, quarter) {
    if (j.kind !== 'video') { j.progress = quarter / 4; return; }
    // The frame in work is half done: progress counts its tiles too.
    j.framesDone = Math.round((j.frames * quarter) / 4);
    j.framesTotal = j.knownTotal;
    j.progress = (j.framesDone + 0.5) / j.frames;
  }

  function run(j) {
    // A video runs a step before its first frame, as the server does while it opens the
    // video: no frame counts yet.
    const start = j.kind === 'video' ? [() => { j.status = 'running'; j.position = null; j.progress = 0; }] : [];
    const steps = [
      () => { j.position = 1; },
      ...start,
      () => { j.status = 'running'; j.position = null; advance(j, 0); },
      () => advance(j, 1),
      () => advance(j, 2),
      () => advance(j, 3),
      () => {
        if (j.fail) { j.status = 'failed'; j.error = j.fail; return; }
        j.status = 'done'; j.progress = 1;
        if (j.kind === 'video') j.framesDone = j.frames;
      },
    ];
    let i = 0;
    const tick = () => {
      if (j.status === 'cancelled') return;
      steps[i++]();
      emit(j);
      if (i < steps.length) j.timer = setTimeout(tick, stepMs);
      else for (const s of j.subscribers) s.end();
    };
    j.timer = setTimeout(tick, stepMs);
  }

  /** The server's refusal of an image upload as `[status, message, code]`, or null. */
  function refuseImage(fields) {
    if (!pngSize(fields.image)) return [415, 'not a PNG, JPEG or WebP image', 'unsupported_format'];
    const format = (fields.format || 'png').trim().toLowerCase();
    if (!IMAGE_FORMATS.includes(format)) return [400, `unknown output format ${JSON.stringify(format)}`, 'bad_field'];
    return null;
  }

  /** The server's refusal of a video upload, in the order it checks: ffmpeg, size, format, probe. */
  function refuseVideo(fields, container) {
    if (!mock.videos) return [415, 'this server cannot read videos: ffmpeg is not installed', 'video_unsupported'];
    if (fields.image.length > mock.maxVideoBytes) {
      return [413, `the video is larger than this server accepts (${Math.floor(mock.maxVideoBytes / 1e6)} MB, --max-video-mb)`, 'video_too_large'];
    }
    const format = (fields.format || 'mp4').trim().toLowerCase();
    if (!VIDEO_FORMATS[format]) return [400, `a video's result is written as mp4, webm or mkv, not ${JSON.stringify(format)}`, 'bad_field'];
    const why = damaged(fields.image, container);
    if (why) return [422, `the video cannot be read: ${why}`, 'corrupt_video'];
    return null;
  }

  /** A video job's result, whole or the range asked for, as the server streams it. */
  function sendVideo(req, res, j) {
    const format = j.result ? j.result.format : j.format;
    const bytes = j.result ? j.result.bytes : mock.videoResult || j.input;
    const headers = { 'Content-Type': VIDEO_FORMATS[format], 'Accept-Ranges': 'bytes',
      'Content-Disposition': `inline; filename="upscaled.${format}"` };
    const range = req.headers.range ? byteRange(req.headers.range, bytes.length) : null;
    if (req.headers.range && !range) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${bytes.length}` });
      return res.end();
    }
    if (!range) {
      res.writeHead(200, { ...headers, 'Content-Length': bytes.length });
      return res.end(bytes);
    }
    const [start, end] = range;
    res.writeHead(206, { ...headers, 'Content-Length': end - start + 1, 'Content-Range': `bytes ${start}-${end}/${bytes.length}` });
    return res.end(bytes.subarray(start, end + 1));
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    if (req.method === 'GET' && TYPES[p]) {
      const [file, type] = TYPES[p];
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(fs.readFileSync(path.join(ASSETS, file)));
      return;
    }
    if (req.method === 'GET' && p === '/v1/models') {
      if (!mock.ready) return json(res, 503, { error: 'models are loading', code: 'not_ready' }, { 'Retry-After': '1' });
      return json(res, 200, { models: [
        { name: 'default', family: 'espcn', scale, source: 'builtin', device: 'cpu', precision: 'exact', default: true },
        { name: 'fsrcnn_x2', family: 'fsrcnn', scale: 2, source: 'models/fsrcnn_x2.pb', device: 'cpu', precision: 'exact', default: false },
      ] });
    }
    if (req.method === 'GET' && p === '/v1/devices') return json(res, 200, mock.devices);
    if (req.method === 'POST' && p === '/v1/jobs') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        mock.uploads++;
        const next = mock.next.shift();
        if (next && next.status) {
          const headers = next.retryAfter != null ? { 'Retry-After': String(next.retryAfter) } : {};
          return json(res, next.status, { error: next.error || 'error', code: next.code || 'error' }, headers);
        }
        const fields = parseMultipart(Buffer.concat(chunks), req.headers['content-type']);
        if (!fields || !fields.image) return json(res, 400, { error: "missing field 'image'", code: 'missing_field' });
        mock.lastFields = Object.fromEntries(Object.entries(fields).filter(([k]) => k !== 'image'));
        const container = videoContainer(fields.image);
        const refusal = container ? refuseVideo(fields, container) : refuseImage(fields);
        if (refusal) return json(res, refusal[0], { error: refusal[1], code: refusal[2] });
        const model = fields.model === 'fsrcnn_x2' ? 2 : scale;
        const id = `job${++seq}`;
        // Frame counts are null for an image, and for a video until its frames come.
        const j = { id, kind: container ? 'video' : 'image', status: 'queued', progress: 0, position: 2, error: null,
          size: container ? null : pngSize(fields.image), scale: model, subscribers: new Set(), fail: next && next.fail,
          framesDone: null, framesTotal: null };
        if (container) {
          j.input = fields.image;
          j.format = (fields.format || 'mp4').trim().toLowerCase();
          j.frames = mock.videoFrames;
          j.knownTotal = next && 'framesTotal' in next ? next.framesTotal : j.frames;
          j.result = next && next.result;
        }
        jobs.set(id, j);
        run(j);
        json(res, 202, { id, status: 'queued', position: 2 }, { Location: `/v1/jobs/${id}` });
      });
      return;
    }
    const m = /^\/v1\/jobs\/([^/]+)(\/events|\/result)?$/.exec(p);
    if (m) {
      const j = jobs.get(m[1]);
      if (!j) return json(res, 404, { error: 'no such job', code: 'not_found' });
      if (req.method === 'DELETE' && !m[2]) {
        clearTimeout(j.timer);
        j.status = 'cancelled';
        emit(j);
        for (const s of j.subscribers) s.end();
        return json(res, 200, view(j));
      }
      if (!m[2]) return json(res, 200, view(j));
      if (m[2] === '/events') {
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
        res.write(`data: ${JSON.stringify(view(j))}\n\n`);
        if (['done', 'failed', 'cancelled'].includes(j.status)) return res.end();
        j.subscribers.add(res);
        req.on('close', () => j.subscribers.delete(res));
        return;
      }
      if (j.status !== 'done') return json(res, 409, { error: 'not done yet', code: 'not_done' });
      if (j.kind === 'video') return sendVideo(req, res, j);
      res.writeHead(200, { 'Content-Type': 'image/png' });
      return res.end(encodePng(j.size.width * j.scale, j.size.height * j.scale));
    }
    json(res, 404, { error: 'not found', code: 'not_found' });
  });
  server.mock = mock;
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

module.exports = { startMock };

if (require.main === module) {
  startMock(Number(process.argv[2] || 8099)).then((s) => {
    console.log(`mock superres API on http://127.0.0.1:${s.address().port}/`);
  });
}
