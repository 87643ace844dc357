// Launches Debian's Chromium headless through playwright-core (no browser download).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const EXECUTABLE = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A fresh browser context with its own profile folder; `close()` removes the folder. */
async function launch(options = {}) {
  if (!fs.existsSync(EXECUTABLE)) {
    throw new Error(`Chromium not found at ${EXECUTABLE} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'superres-e2e-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: EXECUTABLE,
    headless: true,
    args: ARGS,
    acceptDownloads: true,
    viewport: { width: 1100, height: 900 },
    ...options,
  });
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/** The width and height a browser decodes `bytes` to (any format Chromium reads). */
async function decodedSize(page, bytes) {
  return page.evaluate(async (b64) => {
    const bin = atob(b64);
    const arr = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) arr[i] = bin.charCodeAt(i);
    const bmp = await createImageBitmap(new Blob([arr]));
    return { width: bmp.width, height: bmp.height };
  }, Buffer.from(bytes).toString('base64'));
}

/**
 * Records every text the page's status line shows from now on. `texts()` reads them back,
 * a repeat of the same text once: a job's progress as the person saw it, however fast.
 */
async function recordStatus(page) {
  await page.evaluate(() => {
    window.statusTexts = [];
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) window.statusTexts.push(n.textContent);
    }).observe(document.getElementById('status-text'), { childList: true });
  });
  return { texts: () => page.evaluate(() => window.statusTexts.filter((t, i, all) => t !== all[i - 1])) };
}

/** The result's <video> once the result shows and the video has its metadata or an error. */
async function resultVideo(page, timeout = 30000) {
  await page.waitForFunction(() => {
    const v = document.getElementById('result-video');
    return !document.getElementById('result').hidden && (v.readyState >= 1 || v.error);
  }, null, { timeout });
  return page.$eval('#result-video', (v) => ({
    src: v.currentSrc, readyState: v.readyState, error: v.error && v.error.code,
    width: v.videoWidth, height: v.videoHeight, visible: !v.hidden,
    href: document.getElementById('download').href,
  }));
}

module.exports = { launch, decodedSize, recordStatus, resultVideo };
