// The page against a stand-in API (lib/mock-server.js): every message and control,
// deterministically and without a model. The real server is exercised by superres.test.js.
// The video tests make their clips with ffmpeg.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { launch, decodedSize, recordStatus, resultVideo } = require('./lib/browser');
const { startMock } = require('./lib/mock-server');
const { encodePng } = require('./lib/png');
const { makeClip } = require('./lib/video');

const PHOTO = { name: 'photo.png', mimeType: 'image/png', buffer: encodePng(40, 30) };

let server, base, browser, clips;

/**
 * A 64×48 clip of 10 frames, and the stand-in's result for it: the same at ×3, so that the
 * page's <video> has a real H.264 video of the right size to play. Made on first use, so
 * that only the video tests need ffmpeg.
 */
function videoClips() {
  if (!clips) {
    clips = {
      clip: { name: 'clip.mp4', mimeType: 'video/mp4', buffer: makeClip({ width: 64, height: 48 }) },
      result: makeClip({ width: 192, height: 144 }),
    };
    server.mock.videoResult = clips.result;
  }
  return clips;
}

test.before(async () => {
  server = await startMock(0, { scale: 3, stepMs: 100 });
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await launch();
});
test.after(async () => {
  if (browser) await browser.close();
  if (server) { server.closeAllConnections(); server.close(); }
});

async function openPage(viewport) {
  const page = await browser.context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(base + '/');
  await page.waitForSelector('#model:not([disabled])');
  page.jsErrors = errors;
  return page;
}

async function upload(page, file = PHOTO) {
  await page.setInputFiles('#file', file);
  await page.click('#submit');
}

test('empty page: model list with scales, upload disabled until a file is chosen', async () => {
  const page = await openPage();
  const options = await page.$$eval('#model option', (os) => os.map((o) => o.textContent));
  assert.deepEqual(options, ['default — ×3', 'fsrcnn_x2 — ×2']);
  assert.equal(await page.isDisabled('#submit'), true);
  assert.deepEqual(await page.$$eval('#format option', (os) => os.map((o) => o.value)), ['png', 'jpeg', 'webp']);
  // Every control has a label.
  for (const id of ['model', 'format', 'size', 'size-width', 'zoom', 'split', 'pixelated', 'auto-retry']) {
    const labelled = await page.$eval(`#${id}`, (e) => e.labels.length > 0 || !!e.getAttribute('aria-label'));
    assert.ok(labelled, `#${id} has a label`);
  }
  await page.setInputFiles('#file', PHOTO);
  await page.waitForFunction(() => /40×30 → 120×90/.test(document.getElementById('file-info').textContent));
  assert.equal(await page.isDisabled('#submit'), false);
  // The output size follows the choice: a factor, or a width with the aspect ratio kept.
  assert.equal(await page.isHidden('#width-field'), true);
  await page.selectOption('#size', 'x2');
  await page.waitForFunction(() => /40×30 → 80×60/.test(document.getElementById('file-info').textContent));
  await page.selectOption('#size', 'width');
  assert.equal(await page.isVisible('#width-field'), true);
  await page.fill('#size-width', '100');
  await page.waitForFunction(() => /40×30 → 100×75/.test(document.getElementById('file-info').textContent));
  await page.selectOption('#size', '');
  await page.waitForFunction(() => /40×30 → 120×90/.test(document.getElementById('file-info').textContent));
  assert.deepEqual(page.jsErrors, []);
  await page.close();
});

test('keyboard: the drop zone takes focus visibly and opens the file picker', async () => {
  const page = await openPage();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'drop');
  const outline = await page.$eval('#drop', (e) => getComputedStyle(e).outlineStyle);
  assert.notEqual(outline, 'none');
  const chooserEvent = page.waitForEvent('filechooser');
  await page.evaluate(() => 0); // lets the file-chooser interception reach the browser first
  await page.keyboard.press('Enter');
  const chooser = await chooserEvent;
  await chooser.setFiles(PHOTO);
  await page.waitForFunction(() => document.getElementById('file-info').textContent.includes('photo.png'));
  await page.close();
});

test('upload: progress, then the result at 3x, compare, zoom, and the download', async () => {
  const page = await openPage();
  await upload(page);
  await page.waitForSelector('#status-text:has-text("Queued")');
  await page.waitForSelector('#progress:not([hidden])');
  await page.waitForSelector('#result:not([hidden])');
  const size = await page.$eval('#after', (i) => [i.naturalWidth, i.naturalHeight]);
  assert.deepEqual(size, [120, 90]);
  // The input is drawn at the output's displayed size.
  const boxes = await page.$$eval('#before, #after', (is) => is.map((i) => [i.clientWidth, i.clientHeight]));
  assert.deepEqual(boxes[0], boxes[1]);
  assert.equal(await page.textContent('#download'), 'Download photo_x3.png');

  await page.selectOption('#zoom', '4');
  assert.equal(await page.$eval('#stage', (e) => e.style.width), '480px');
  assert.equal(await page.$eval('#after', (e) => e.classList.contains('pixelated')), true);
  await page.check('#pixelated');
  assert.equal(await page.$eval('#before', (e) => getComputedStyle(e).imageRendering), 'pixelated');
  await page.click('#zoom-in');
  assert.equal(await page.$eval('#stage', (e) => e.style.width), '960px');
  await page.fill('#split', '20');
  await page.$eval('#split', (e) => e.dispatchEvent(new Event('input')));
  assert.match(await page.$eval('#before-clip', (e) => e.style.clipPath), /inset\(0(px)? 80% 0(px)? 0(px)?\)/);

  // Wheel zoom about the pointer; "0" fits again.
  const vp = await page.locator('#viewport').boundingBox();
  await page.mouse.move(vp.x + 50, vp.y + 50);
  await page.mouse.wheel(0, -100);
  assert.equal(await page.$eval('#stage', (e) => e.style.width), '1200px');
  await page.focus('#viewport');
  await page.keyboard.press('0');
  assert.match(await page.$eval('#zoom', (s) => s.selectedOptions[0].textContent), /^Fit \(\d+%\)$/);

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  assert.equal(download.suggestedFilename(), 'photo_x3.png');
  const bytes = fs.readFileSync(await download.path());
  assert.deepEqual(await decodedSize(page, bytes), { width: 120, height: 90 });
  assert.deepEqual(page.jsErrors, []);
  await page.close();
});

test('the download name follows the input name, the model scale and the format', async () => {
  const page = await openPage();
  await page.selectOption('#model', 'fsrcnn_x2');
  await page.selectOption('#format', 'webp');
  await upload(page, { ...PHOTO, name: 'holiday.photo.jpg' });
  await page.waitForSelector('#result:not([hidden])');
  assert.equal(await page.getAttribute('#download', 'download'), 'holiday.photo_x2.webp');
  await page.close();
});

test('a video: its size before the upload, frame progress, then it plays and downloads as clip_x3.mp4', async () => {
  const { clip, result } = videoClips();
  const page = await openPage();
  await page.setInputFiles('#file', clip);
  // Read with a <video> element: its size, the result's, and its length.
  await page.waitForFunction(() => document.getElementById('file-info').textContent === 'clip.mp4 — 3.0 kB, video, 64×48 → 192×144, 1.0 s');
  await page.waitForFunction(() => /^data:image\/jpeg/.test(document.getElementById('thumb').src) && !document.getElementById('thumb').hidden);
  // A frame of the test pattern, not a blank one.
  const brightest = await page.$eval('#thumb', async (img) => {
    await img.decode();
    const c = document.createElement('canvas');
    [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    return Math.max(...g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 !== 3));
  });
  assert.ok(brightest > 128, `the thumbnail shows the video (brightest channel ${brightest})`);
  assert.equal(await page.isDisabled('#format'), true, 'the output format is for images');
  assert.equal(await page.isVisible('#format-hint'), true);
  assert.match(await page.textContent('#format-hint'), /a video comes back as MP4/);
  assert.equal(await page.$eval('#format', (s) => s.getAttribute('aria-describedby')), 'format-hint');
  const status = await recordStatus(page);
  await page.click('#submit');
  const video = await resultVideo(page);
  assert.equal(server.mock.lastFields.format, undefined, 'no image format is sent with a video');
  // Opening the video, then 10 frames in four steps; the frame in work is the one after those done.
  assert.deepEqual((await status.texts()).filter((t) => t.startsWith('Upscaling')), [
    'Upscaling the video… 0%', 'Upscaling frame 1 of 10… 5%', 'Upscaling frame 4 of 10… 35%',
    'Upscaling frame 6 of 10… 55%', 'Upscaling frame 9 of 10… 85%',
  ]);
  assert.equal(video.error, null);
  assert.equal(video.visible, true);
  assert.ok(video.readyState >= 1, `readyState ${video.readyState}`);
  assert.deepEqual([video.width, video.height], [192, 144]);
  assert.match(video.src, /^blob:/);
  assert.equal(video.href, video.src, 'the download is the video shown');
  assert.equal(await page.isHidden('#image-view'), true, 'no before/after compare for a video');
  assert.equal(await page.isVisible('#viewport'), false);
  assert.equal(await page.isVisible('#zoom'), false);
  assert.match(await page.textContent('#result-info'), /^64×48 → 192×144 · 1\.0 s · 15\.\d kB$/);
  assert.equal(await page.textContent('#download'), 'Download clip_x3.mp4');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  assert.equal(download.suggestedFilename(), 'clip_x3.mp4');
  assert.ok(fs.readFileSync(await download.path()).equals(result), 'the download is the server\'s result');

  // An image next: the format applies again, and the compare view replaces the video.
  await page.setInputFiles('#file', PHOTO);
  await page.waitForFunction(() => /40×30 → 120×90$/.test(document.getElementById('file-info').textContent));
  assert.equal(await page.isDisabled('#format'), false);
  assert.equal(await page.isHidden('#format-hint'), true);
  await page.click('#submit');
  await page.waitForSelector('#result:not([hidden])');
  assert.equal(server.mock.lastFields.format, 'png');
  assert.equal(await page.isVisible('#viewport'), true);
  assert.equal(await page.isHidden('#result-video'), true);
  assert.equal(await page.$eval('#result-video', (v) => v.hasAttribute('src')), false, 'the old video is let go');
  assert.equal(await page.getAttribute('#download', 'download'), 'photo_x3.png');
  assert.deepEqual(page.jsErrors, []);
  await page.close();
});

test('a video of unknown length counts its frames without a total; the size and the result type name it', async () => {
  const { clip } = videoClips();
  const page = await openPage();
  await page.selectOption('#size', 'x2');
  await page.setInputFiles('#file', clip);
  await page.waitForFunction(() => /64×48 → 128×96/.test(document.getElementById('file-info').textContent));
  // A WebM back: the extension is the result's, not the input's nor a fixed one.
  const webm = makeClip({ width: 128, height: 96, webm: true });
  server.mock.next.push({ framesTotal: null, result: { format: 'webm', bytes: webm } });
  const status = await recordStatus(page);
  await page.click('#submit');
  const video = await resultVideo(page);
  assert.equal(server.mock.lastFields.outscale, '2');
  assert.deepEqual((await status.texts()).filter((t) => t.startsWith('Upscaling')), [
    'Upscaling the video… 0%', 'Upscaling frame 1… 5%', 'Upscaling frame 4… 35%', 'Upscaling frame 6… 55%', 'Upscaling frame 9… 85%',
  ]);
  assert.deepEqual([video.width, video.height], [128, 96]);
  assert.equal(await page.getAttribute('#download', 'download'), 'clip_x2.webm');
  await page.close();
});

test('a file the browser cannot read is still uploaded; a video named as an image is told by its content', async () => {
  const { clip } = videoClips();
  const page = await openPage();
  // An AVI header and nothing playable: Chromium reads no AVI, the server (here the stand-in) does.
  const avi = Buffer.concat([Buffer.from('RIFF\x00\x08\x00\x00AVI LIST', 'latin1'), Buffer.alloc(2000, 7)]);
  await page.setInputFiles('#file', { name: 'old.avi', mimeType: 'video/x-msvideo', buffer: avi });
  await page.waitForFunction(() => document.getElementById('file-info').textContent === 'old.avi — 2.0 kB, video (no preview: this browser cannot read it)');
  assert.equal(await page.isDisabled('#submit'), false);
  assert.equal(await page.isDisabled('#format'), true, 'a video by its name');
  await page.click('#submit');
  const video = await resultVideo(page);
  assert.deepEqual([video.width, video.height], [192, 144]);
  assert.equal(await page.getAttribute('#download', 'download'), 'old_x3.mp4');

  await page.setInputFiles('#file', { ...clip, name: 'clip.png', mimeType: 'image/png' });
  await page.waitForFunction(() => /video, 64×48 → 192×144/.test(document.getElementById('file-info').textContent));
  assert.equal(await page.isDisabled('#format'), true, 'a video by its content');
  await page.close();
});

for (const [name, setup, file, title, text, detail] of [
  ['413 video_too_large', (m) => { m.maxVideoBytes = 1000; }, () => videoClips().clip, 'Video too large', 'shorter or smaller video',
    'the video is larger than this server accepts (0 MB, --max-video-mb)'],
  ['415 video_unsupported', (m) => { m.videos = false; }, () => videoClips().clip, 'Videos not supported', 'cannot process videos',
    'this server cannot read videos: ffmpeg is not installed'],
  ['422 corrupt_video', () => {}, () => ({ ...videoClips().clip, buffer: videoClips().clip.buffer.subarray(0, 1500) }), 'Corrupt video', 'damaged or truncated',
    'the video cannot be read: moov atom not found'],
]) {
  test(`a video refused with ${name} shows "${title}" and the server's message`, async () => {
    const page = await openPage();
    const saved = { maxVideoBytes: server.mock.maxVideoBytes, videos: server.mock.videos };
    setup(server.mock);
    try {
      await upload(page, file());
      await page.waitForSelector('#error:not([hidden])');
      assert.equal(await page.textContent('#error-title'), title);
      const shown = await page.textContent('#error-text');
      assert.ok(shown.includes(text), shown);
      assert.equal(await page.textContent('#error-detail'), `Server: ${detail}`);
      assert.equal(await page.isVisible('#status'), false);
      assert.equal(await page.isDisabled('#submit'), false, 'the user can try again');
    } finally {
      Object.assign(server.mock, saved);
    }
    await page.close();
  });
}

for (const [status, title, extra] of [
  [413, 'Image too large', 'smaller image'],
  [415, 'Unsupported file', 'not an image'],
  [422, 'Corrupt image', 'could not be decoded'],
  [503, 'Server not ready', 'still starting'],
  [500, 'Server error', 'HTTP 500'],
]) {
  test(`HTTP ${status} shows "${title}"`, async () => {
    const page = await openPage();
    server.mock.next.push({ status, error: 'detail from the server', code: 'x', retryAfter: status === 503 ? 30 : undefined });
    await upload(page);
    await page.waitForSelector('#error:not([hidden])');
    assert.equal(await page.textContent('#error-title'), title);
    const text = await page.textContent('#error-text');
    assert.ok(text.includes(extra), text);
    assert.equal(await page.textContent('#error-detail'), 'Server: detail from the server');
    assert.equal(await page.isVisible('#retry-box'), status === 503);
    assert.equal(await page.isDisabled('#submit'), false, 'the user can try again');
    await page.close();
  });
}

test('a file that is not an image is refused with the server message', async () => {
  const page = await openPage();
  await upload(page, { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('just some text\n') });
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#error-title'), 'Unsupported file');
  await page.close();
});

test('busy (429): says when to retry, and retries once the user agrees', async () => {
  const page = await openPage();
  server.mock.next.push({ status: 429, error: 'queue full', code: 'queue_full', retryAfter: 2 });
  const before = server.mock.uploads;
  await upload(page);
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#error-title'), 'Server busy');
  assert.match(await page.textContent('#error-text'), /retry in 2 s/);
  assert.match(await page.textContent('#retry'), /Retry in [12] s/);
  // No retry without consent.
  await page.waitForTimeout(2300);
  assert.equal(server.mock.uploads, before + 1);
  assert.equal(await page.textContent('#retry'), 'Retry now');
  await page.click('#retry');
  await page.waitForSelector('#result:not([hidden])');
  assert.equal(server.mock.uploads, before + 2);
  assert.equal(await page.isVisible('#error'), false);
  await page.close();
});

test('busy (429): "Retry automatically" retries when the countdown ends', async () => {
  const page = await openPage();
  server.mock.next.push({ status: 429, error: 'queue full', code: 'queue_full', retryAfter: 1 });
  await upload(page);
  await page.waitForSelector('#retry-box:not([hidden])');
  await page.check('#auto-retry');
  await page.waitForSelector('#result:not([hidden])', { timeout: 5000 });
  await page.close();
});

test('a failed job shows the reason', async () => {
  const page = await openPage();
  server.mock.next.push({ fail: 'out of memory on the device' });
  await upload(page);
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#error-title'), 'Upscaling failed');
  assert.match(await page.textContent('#error-text'), /out of memory on the device/);
  await page.close();
});

test('a job can be cancelled while it waits', async () => {
  const page = await openPage();
  await upload(page);
  await page.waitForSelector('#cancel:not([hidden])');
  await page.click('#cancel');
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#error-title'), 'Cancelled');
  await page.close();
});

test('phone width: no horizontal scrolling, controls stay usable', async () => {
  const page = await openPage({ width: 360, height: 740 });
  await upload(page);
  await page.waitForSelector('#result:not([hidden])');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  const box = await page.locator('#download').boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 360);
  await page.close();
});

test('the footer names the device; a GPU shows its memory and load', async () => {
  let page = await openPage();
  await page.waitForSelector('#device:not([hidden])');
  assert.equal(await page.textContent('#device'), 'Runs on CPU (avx2, 2 threads) · precision exact');
  await page.close();
  const cpu = server.mock.devices;
  server.mock.devices = {
    backend: 'cuda (NVIDIA H200)', precision: 'fp16',
    devices: [{ id: 'cuda:0', name: 'NVIDIA H200', memory_total_bytes: 140 * 1024 ** 3,
      memory_used_bytes: 12 * 1024 ** 3, utilisation_percent: 45.4 }],
  };
  try {
    page = await openPage();
    await page.waitForSelector('#device:not([hidden])');
    assert.equal(await page.textContent('#device'),
      'Runs on cuda:0 NVIDIA H200, 12.0 GiB / 140.0 GiB, 45% busy · precision fp16');
    assert.deepEqual(page.jsErrors, []);
    await page.close();
  } finally {
    server.mock.devices = cpu;
  }
});

test('while the server loads its models, the page says so and picks them up when ready', async () => {
  server.mock.ready = false;
  const page = await browser.context.newPage();
  try {
    await page.goto(base + '/');
    await page.waitForFunction(() => /loading its models/.test(document.getElementById('model').textContent));
    assert.equal(await page.isDisabled('#model'), true);
    server.mock.ready = true;
    await page.waitForSelector('#model:not([disabled])', { timeout: 10000 });
    assert.equal(await page.$eval('#model', (s) => s.value), 'default');
  } finally {
    server.mock.ready = true;
    await page.close();
  }
});
