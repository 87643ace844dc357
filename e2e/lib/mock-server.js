// A stand-in for the superres HTTP API, serving the real page assets. It lets the page
// tests drive every error path (413/415/422/429/503, failed and cancelled jobs) without
// a model, and in a fixed, fast time. Start it with `node e2e/lib/mock-server.js [port]`
// to work on the page by hand.
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { encodePng, pngSize } = require('./png');

const ASSETS = path.join(__dirname, '..', '..', 'crates', 'server', 'assets');
const TYPES = { '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'] };

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
 * answer errors instead: `{status, error, code, retryAfter}` or `{fail: "message"}`.
 */
function startMock(port = 0, opts = {}) {
  const scale = opts.scale || 3;
  const stepMs = opts.stepMs ?? 120;
  const jobs = new Map();
  // `mock.devices` is what /v1/devices answers: the CPU unless a test sets a GPU.
  const mock = { next: [], ready: opts.ready ?? true, jobs, uploads: 0, devices: {
    backend: 'cpu (avx2, 2 threads)', precision: 'exact',
    devices: [{ id: 'cpu', name: 'avx2, 2 threads', memory_total_bytes: null, memory_used_bytes: null, utilisation_percent: null }],
  } };
  let seq = 0;

  const json = (res, status, obj, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(obj));
  };
  const view = (j) => ({ id: j.id, status: j.status, progress: j.progress, position: j.position, error: j.error });
  const emit = (j) => { for (const s of j.subscribers) s.write(`data: ${JSON.stringify(view(j))}\n\n`); };

  function run(j) {
    const steps = [
      () => { j.position = 1; },
      () => { j.status = 'running'; j.position = null; j.progress = 0; },
      () => { j.progress = 0.25; },
      () => { j.progress = 0.5; },
      () => { j.progress = 0.75; },
      () => {
        if (j.fail) { j.status = 'failed'; j.error = j.fail; return; }
        j.status = 'done'; j.progress = 1;
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
        const size = pngSize(fields.image);
        if (!size) return json(res, 415, { error: 'not a PNG, JPEG or WebP image', code: 'unsupported_format' });
        const model = fields.model === 'fsrcnn_x2' ? 2 : scale;
        const id = `job${++seq}`;
        const j = { id, status: 'queued', progress: 0, position: 2, error: null, size, scale: model,
          subscribers: new Set(), fail: next && next.fail };
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
