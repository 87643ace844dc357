// Starts the real `superres serve` binary on a free loopback port for a test.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = process.env.SUPERRES_SHARED || path.join(ROOT, '..', 'shared');

/** The binary under test: $SUPERRES_BIN, or the debug build. */
function binaryPath() {
  return process.env.SUPERRES_BIN || path.join(ROOT, 'target', 'debug', 'superres');
}

/** The model to serve: $SUPERRES_E2E_MODEL, OpenCV's ESPCN ×3, or the repository's default. */
function modelPath() {
  const candidates = [
    process.env.SUPERRES_E2E_MODEL,
    path.join(SHARED, 'models', 'opencv', 'ESPCN_x3.pb'),
    path.join(ROOT, 'models', 'default_x3.onnx'),
  ].filter(Boolean);
  return candidates.find((p) => fs.existsSync(p)) || null;
}

/** Why the real-server tests cannot run here, or null when they can. */
function missing() {
  if (!fs.existsSync(binaryPath())) return `no server binary at ${binaryPath()} (cargo build -p superres-cli, or set SUPERRES_BIN)`;
  if (!modelPath()) return 'no model: set SUPERRES_E2E_MODEL, or provide shared/models/opencv/ESPCN_x3.pb or models/default_x3.onnx';
  return null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts the server with `extraArgs` and waits until `/readyz` answers 200.
 * Resolves to `{ base, stop(), log() }`.
 */
async function startServer(extraArgs = [], { readyTimeoutMs = 120000 } = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const args = ['serve', '--bind', `127.0.0.1:${port}`, '--model', modelPath(), '--device', 'cpu', ...extraArgs];
  const env = { ...process.env, SUPERRES_LOG: process.env.SUPERRES_LOG || 'warn' };
  const child = spawn(binaryPath(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => { output = (output + d).slice(-20000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) throw new Error(`superres serve exited (${JSON.stringify(exited)}) before it was ready:\n${output}`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`superres serve was not ready after ${readyTimeoutMs} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  const stop = async () => {
    if (exited) return;
    const done = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(timer);
  };
  return { base, stop, log: () => output };
}

module.exports = { startServer, missing, binaryPath, modelPath, SHARED, ROOT };
