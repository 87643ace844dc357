// The page served by the real `superres serve` binary, with a real model: upload, result,
// download, an unsupported file, a full queue, and a video (made with ffmpeg). Takes the
// README's screenshots: into docs/screenshots/ when E2E_SCREENSHOTS=docs (to refresh them),
// else into a temporary folder.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { launch, decodedSize, recordStatus, resultVideo } = require('./lib/browser');
const { startServer, missing, modelPath, SHARED, ROOT } = require('./lib/server');
const { encodePng } = require('./lib/png');
const { makeClip, probeClip } = require('./lib/video');

const SHOTS = process.env.E2E_SCREENSHOTS === 'docs'
  ? path.join(ROOT, 'docs', 'screenshots')
  : fs.mkdtempSync(path.join(os.tmpdir(), 'superres-shots-'));
const why = missing();
if (why) {
  console.log(`\n*** SKIPPED: the real-server page tests cannot run: ${why} ***\n`);
}
const realTest = (name, opts, fn) => test(name, { skip: why || false, ...opts }, fn);

// A photograph for the screenshots when the shared test images are there.
const PHOTO_PATH = path.join(SHARED, 'images', 'opencv', 'comic.jpg');
const photo = () => (fs.existsSync(PHOTO_PATH)
  ? { name: 'comic.jpg', mimeType: 'image/jpeg', buffer: fs.readFileSync(PHOTO_PATH) }
  : { name: 'photo.png', mimeType: 'image/png', buffer: encodePng(150, 110) });
// A larger one, for a job that runs long enough to watch.
const LARGE_PATH = path.join(SHARED, 'images', 'opencv', 'plant.jpg');
const largePhoto = () => (fs.existsSync(LARGE_PATH)
  ? { name: 'plant.jpg', mimeType: 'image/jpeg', buffer: fs.readFileSync(LARGE_PATH) }
  : { name: 'photo.png', mimeType: 'image/png', buffer: encodePng(600, 450) });

let browser;
test.before(async () => {
  if (why) return;
  console.log(`# real-server tests: model ${modelPath()}`);
  fs.mkdirSync(SHOTS, { recursive: true });
  browser = await launch();
});
test.after(async () => { if (browser) await browser.close(); });

async function openPage(base, viewport = { width: 1100, height: 900 }) {
  const page = await browser.context.newPage();
  await page.setViewportSize(viewport);
  page.jsErrors = [];
  page.on('pageerror', (e) => page.jsErrors.push(e));
  await page.goto(`${base}/`);
  await page.waitForSelector('#model:not([disabled])', { timeout: 30000 });
  return page;
}

async function modelScale(base) {
  const body = await (await fetch(`${base}/v1/models`)).json();
  const list = Array.isArray(body) ? body : body.models;
  const m = list.find((x) => x.default) || list[0];
  return { name: m.name, scale: m.scale };
}

/** Posts `png` as a job straight to the API; resolves to the response. */
function postJob(base, png, name = 'flood.png') {
  const fd = new FormData();
  fd.append('image', new Blob([png], { type: 'image/png' }), name);
  return fetch(`${base}/v1/jobs`, { method: 'POST', body: fd });
}

realTest('the binary serves the page as it is in crates/server/assets', { timeout: 180000 }, async () => {
  const server = await startServer();
  try {
    for (const [url, file] of [['/', 'index.html'], ['/app.js', 'app.js'], ['/style.css', 'style.css']]) {
      const served = await (await fetch(server.base + url)).text();
      const onDisk = fs.readFileSync(path.join(ROOT, 'crates', 'server', 'assets', file), 'utf8');
      assert.ok(served === onDisk, `${url} differs from assets/${file}: rebuild the binary (cargo build -p superres-cli)`);
    }
  } finally {
    await server.stop();
  }
});

realTest('upload a photo: the result is scale × the input, and the download is that image', { timeout: 300000 }, async () => {
  const server = await startServer();
  try {
    const { name, scale } = await modelScale(server.base);
    const page = await openPage(server.base);
    const label = await page.$eval('#model', (s) => s.selectedOptions[0].textContent);
    assert.equal(label, `${name} — ×${scale}`);
    // The footer names what the server runs on, as /v1/devices reports it.
    await page.waitForSelector('#device:not([hidden])');
    assert.match(await page.textContent('#device'), /^Runs on (CPU \(|cuda:\d)/);
    await page.screenshot({ path: path.join(SHOTS, 'empty.png') });

    // A small generated photo: exact sizes.
    await page.setInputFiles('#file', { name: 'photo.png', mimeType: 'image/png', buffer: encodePng(40, 30) });
    await page.click('#submit');
    await page.waitForSelector('#result:not([hidden])', { timeout: 240000 });
    const size = await page.$eval('#after', (i) => ({ width: i.naturalWidth, height: i.naturalHeight }));
    assert.deepEqual(size, { width: 40 * scale, height: 30 * scale });
    const boxes = await page.$$eval('#before, #after', (is) => is.map((i) => [i.clientWidth, i.clientHeight]));
    assert.deepEqual(boxes[0], boxes[1], 'input and result are shown at the same size');
    assert.equal(await page.getAttribute('#download', 'download'), `photo_x${scale}.png`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert.equal(download.suggestedFilename(), `photo_x${scale}.png`);
    const bytes = fs.readFileSync(await download.path());
    assert.equal(bytes.subarray(1, 4).toString(), 'PNG');
    assert.deepEqual(await decodedSize(page, bytes), { width: 40 * scale, height: 30 * scale });

    // Another output size: the server resamples the model's result.
    await page.selectOption('#size', 'x2');
    await page.setInputFiles('#file', { name: 'small.png', mimeType: 'image/png', buffer: encodePng(40, 30) });
    await page.click('#submit');
    await page.waitForFunction(() => /small_x2\.png/.test(document.getElementById('download').download || ''), null, { timeout: 240000 });
    const resized = await page.$eval('#after', (i) => ({ width: i.naturalWidth, height: i.naturalHeight }));
    assert.deepEqual(resized, { width: 80, height: 60 });
    await page.selectOption('#size', '');

    // A photograph for the compare view's screenshot, as WebP.
    const pic = photo();
    await page.selectOption('#format', 'webp');
    await page.setInputFiles('#file', pic);
    await page.click('#submit');
    await page.waitForSelector('#result:not([hidden])', { timeout: 240000 });
    const stem = pic.name.replace(/\.[^.]+$/, '');
    assert.equal(await page.getAttribute('#download', 'download'), `${stem}_x${scale}.webp`);
    await page.selectOption('#zoom', '2');
    await page.check('#pixelated');
    await page.evaluate(() => { const v = document.getElementById('viewport'); v.scrollLeft = v.scrollWidth / 4; v.scrollTop = v.scrollHeight / 6; });
    await page.waitForTimeout(200);
    await page.screenshot({ path: path.join(SHOTS, 'compare.png'), fullPage: true });

    // Phone width.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.selectOption('#zoom', 'fit');
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than a phone screen`);
    await page.screenshot({ path: path.join(SHOTS, 'phone.png'), fullPage: true });
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    await server.stop();
  }
});

realTest('refusals: not an image (415), too many pixels (413), a truncated image', { timeout: 180000 }, async () => {
  const server = await startServer(['--max-pixels', '1000']);
  try {
    const page = await openPage(server.base);
    const attempt = async (file) => {
      await page.setInputFiles('#file', file);
      await page.click('#submit');
      await page.waitForSelector('#error:not([hidden])', { timeout: 60000 });
      return { title: await page.textContent('#error-title'), text: await page.textContent('#error') };
    };
    let r = await attempt({ name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('these are notes, not pixels\n') });
    assert.equal(r.title, 'Unsupported file');
    assert.match(r.text, /not an image/);

    r = await attempt({ name: 'photo.png', mimeType: 'image/png', buffer: encodePng(40, 30) });
    assert.equal(r.title, 'Image too large');

    // Cut short: refused at upload (422) or when decoded by the worker (a failed job).
    const whole = encodePng(20, 20);
    r = await attempt({ name: 'cut.png', mimeType: 'image/png', buffer: whole.subarray(0, whole.length - 30) });
    assert.ok(['Corrupt image', 'Upscaling failed'].includes(r.title), r.title);
    assert.match(r.text, /truncated|corrupt|decode/i);
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    await server.stop();
  }
});

realTest('a full queue shows "busy" with the wait, then retries when the user agrees', { timeout: 420000 }, async () => {
  // One worker, one waiting place: a third job is refused. Small tiles make the progress
  // bar move in steps.
  const server = await startServer(['--queue-size', '1', '--workers', '1', '--tile', '64']);
  const ids = [];
  try {
    const { scale } = await modelScale(server.base);
    const page = await openPage(server.base);
    const pic = largePhoto();
    const input = await decodedSize(page, pic.buffer);
    await page.setInputFiles('#file', pic);

    // Fill the queue with large images (several seconds each) until the server refuses one.
    const big = encodePng(2400, 1800);
    let refused = null;
    for (let i = 0; i < 6 && !refused; i++) {
      const res = await postJob(server.base, big);
      if (res.status === 202) ids.push((await res.json()).id);
      else if (res.status === 429) refused = res;
      else assert.fail(`unexpected HTTP ${res.status}: ${await res.text()}`);
    }
    assert.ok(refused, 'the server refused a job with 429');
    const retryAfter = Number(refused.headers.get('retry-after'));
    assert.ok(retryAfter >= 1, 'Retry-After is given');

    await page.click('#submit');
    await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
    assert.equal(await page.textContent('#error-title'), 'Server busy');
    assert.match(await page.textContent('#error-text'), /retry in \d+ s/);
    assert.match(await page.textContent('#retry'), /Retry in \d+ s|Retry now/);
    await page.screenshot({ path: path.join(SHOTS, 'busy.png') });

    // Free the waiting place but keep the running job, so that the page's job waits its turn.
    for (const id of ids) {
      const view = await (await fetch(`${server.base}/v1/jobs/${id}`)).json();
      if (view.status === 'queued') await fetch(`${server.base}/v1/jobs/${id}`, { method: 'DELETE' });
    }
    await page.check('#auto-retry');
    // Screenshots of the job in progress: waiting behind the running job, then (when the
    // browser catches it; the job is short) running with its progress bar.
    const phase = () => page.evaluate(() => {
      if (!document.getElementById('result').hidden) return 'done';
      const p = document.getElementById('progress');
      if (!p.hidden && p.value > 0) return 'running';
      return /^Queued/.test(document.getElementById('status-text').textContent) ? 'queued' : 'waiting';
    });
    const seen = new Set();
    for (const deadline = Date.now() + 240000; Date.now() < deadline;) {
      const now = await phase();
      if (now === 'done') break;
      if ((now === 'queued' || now === 'running') && !seen.has(now)) {
        seen.add(now);
        await page.screenshot({ path: path.join(SHOTS, 'progress.png') });
        if (now === 'running') break;
      }
      await page.waitForTimeout(30);
    }
    assert.ok(seen.size > 0, 'the job was seen queued or running');
    await page.waitForSelector('#result:not([hidden])', { timeout: 240000 });
    const size = await page.$eval('#after', (i) => [i.naturalWidth, i.naturalHeight]);
    assert.deepEqual(size, [input.width * scale, input.height * scale]);
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    for (const id of ids) await fetch(`${server.base}/v1/jobs/${id}`, { method: 'DELETE' }).catch(() => {});
    await server.stop();
  }
});

realTest('a video: upscaled frame by frame, it plays at scale × the input and downloads with its sound', { timeout: 300000 }, async () => {
  // 1 s of 48×32 at 8 fps with a tone: 8 frames, and an audio track the server copies.
  const clip = { name: 'clip.mp4', mimeType: 'video/mp4', buffer: makeClip({ width: 48, height: 32, fps: 8, audio: true }) };
  const server = await startServer();
  try {
    const { scale } = await modelScale(server.base);
    const [w, h] = [48 * scale, 32 * scale];
    const page = await openPage(server.base);
    await page.setInputFiles('#file', clip);
    await page.waitForFunction((t) => document.getElementById('file-info').textContent.includes(t), `video, 48×32 → ${w}×${h}`);
    assert.equal(await page.isDisabled('#format'), true, 'no image format for a video');
    const status = await recordStatus(page);
    await page.click('#submit');
    await page.waitForFunction(() => !document.getElementById('result').hidden || !document.getElementById('error').hidden,
      null, { timeout: 240000 });
    assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));

    const video = await resultVideo(page);
    assert.equal(video.error, null, 'Chromium plays the result');
    assert.ok(video.readyState >= 1, `readyState ${video.readyState}`);
    assert.deepEqual({ width: video.width, height: video.height }, { width: w, height: h });
    assert.equal(await page.isHidden('#image-view'), true, 'no before/after compare for a video');
    // However many progress events the browser saw, each names the frame (of 8, once the
    // server knows the count), or says the video is being opened.
    const running = (await status.texts()).filter((t) => t.startsWith('Upscaling'));
    for (const t of running) assert.match(t, /^Upscaling (frame [1-8]( of 8)?|the video)… \d+%$/);
    // The server reports every frame; the page, subscribed before the first, shows some.
    assert.ok(running.some((t) => t.includes('frame')), `frame progress shown: ${JSON.stringify(running)}`);

    assert.equal(await page.getAttribute('#download', 'download'), `clip_x${scale}.mp4`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert.equal(download.suggestedFilename(), `clip_x${scale}.mp4`);
    const bytes = fs.readFileSync(await download.path());
    assert.equal(bytes.subarray(4, 8).toString(), 'ftyp', 'an MP4');
    assert.deepEqual(probeClip(bytes), { width: w, height: h, frames: 8, audioStreams: 1 });
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    await server.stop();
  }
});

realTest('a video over --max-video-mb is refused as too large, with the server\'s message', { timeout: 180000 }, async () => {
  const server = await startServer(['--max-video-mb', '1']);
  try {
    const page = await openPage(server.base);
    // A real MP4, then 2 MB of zeros: a video by its content, over the 1 MB limit.
    const clip = makeClip({ width: 48, height: 32, fps: 8 });
    const big = Buffer.concat([clip, Buffer.alloc(2 * 1000 * 1000)]);
    await page.setInputFiles('#file', { name: 'long.mp4', mimeType: 'video/mp4', buffer: big });
    await page.click('#submit');
    await page.waitForSelector('#error:not([hidden])', { timeout: 60000 });
    assert.equal(await page.textContent('#error-title'), 'Video too large');
    assert.match(await page.textContent('#error-detail'), /^Server: .*--max-video-mb/);
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    await server.stop();
  }
});

realTest('API keys: the page asks for a key, keeps it, and sends it', { timeout: 300000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'superres-keys-'));
  const hex = require('node:crypto').createHash('sha256').update('page-key').digest('hex');
  const keys = path.join(dir, 'keys.txt');
  fs.writeFileSync(keys, `page:${hex}\n`);
  const server = await startServer(['--api-keys', keys]);
  try {
    const { scale } = await modelScale(server.base);
    const page = await openPage(server.base);
    assert.equal(await page.isHidden('#key-field'), true, 'no field until the server asks');
    await page.setInputFiles('#file', { name: 'photo.png', mimeType: 'image/png', buffer: encodePng(20, 10) });
    await page.click('#submit');
    await page.waitForSelector('#error:not([hidden])');
    assert.equal(await page.textContent('#error-title'), 'API key needed');
    assert.equal(await page.isVisible('#key-field'), true);

    await page.fill('#api-key', 'wrong-key');
    await page.dispatchEvent('#api-key', 'change');
    await page.click('#submit');
    await page.waitForFunction(() => document.getElementById('error-title').textContent === 'API key not accepted');

    await page.fill('#api-key', 'page-key');
    await page.dispatchEvent('#api-key', 'change');
    await page.click('#submit');
    await page.waitForSelector('#result:not([hidden])', { timeout: 240000 });
    const size = await page.$eval('#after', (i) => ({ width: i.naturalWidth, height: i.naturalHeight }));
    assert.deepEqual(size, { width: 20 * scale, height: 10 * scale });

    // The key survives a reload of the page.
    await page.reload();
    await page.waitForSelector('#model:not([disabled])');
    assert.equal(await page.isVisible('#key-field'), true);
    assert.equal(await page.inputValue('#api-key'), 'page-key');
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
