// superres web page: upload an image or a video, follow the job, compare (or play) and
// download the result.
// Plain browser JavaScript, no dependencies.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    form: $('form'), drop: $('drop'), file: $('file'), fileInfo: $('file-info'), thumb: $('thumb'),
    model: $('model'), format: $('format'), formatHint: $('format-hint'), submit: $('submit'),
    size: $('size'), sizeWidth: $('size-width'), widthField: $('width-field'),
    status: $('status'), statusText: $('status-text'), progress: $('progress'), cancel: $('cancel'),
    error: $('error'), errorTitle: $('error-title'), errorText: $('error-text'), errorDetail: $('error-detail'),
    retryBox: $('retry-box'), retry: $('retry'), autoRetry: $('auto-retry'),
    result: $('result'), resultInfo: $('result-info'), download: $('download'),
    resultVideo: $('result-video'), imageView: $('image-view'),
    zoom: $('zoom'), zoomIn: $('zoom-in'), zoomOut: $('zoom-out'), pixelated: $('pixelated'),
    viewport: $('viewport'), stage: $('stage'), before: $('before'), after: $('after'),
    beforeClip: $('before-clip'), divider: $('divider'), split: $('split'),
    device: $('device'), keyField: $('key-field'), apiKey: $('api-key'),
  };

  const state = {
    file: null,          // the chosen File
    inputUrl: null,      // object URL of the input, for the "before" image
    inputSize: null,     // {w, h} when the browser could decode the input
    inputKind: 'image',  // 'image' or 'video', as far as the browser can tell
    inputDuration: null, // seconds, for a video the browser can read
    probe: null,         // the <video> reading the chosen video's size, until it answers
    unreadable: false,   // the browser read the chosen file as neither an image nor a video
    models: [],          // from /v1/models
    job: null,           // {id, events: EventSource|null, poll: timer|null, done: bool}
    resultUrl: null,
    outSize: null,       // {w, h}
    zoom: 'fit',         // 'fit' or a number: CSS pixels per output pixel
    scale: 1,            // the zoom actually applied
    retryTimer: null,
    retryAt: 0,
  };

  // ---------- API key (only on servers started with --api-keys) ----------

  const KEY_STORE = 'superres.apiKey';
  const storedKey = () => { try { return localStorage.getItem(KEY_STORE) || ''; } catch { return ''; } };
  el.apiKey.value = storedKey();
  el.keyField.hidden = !el.apiKey.value;
  el.apiKey.addEventListener('change', () => {
    el.apiKey.value = el.apiKey.value.trim();
    try {
      if (el.apiKey.value) localStorage.setItem(KEY_STORE, el.apiKey.value);
      else localStorage.removeItem(KEY_STORE);
    } catch { /* storage disabled: the key lasts as long as the page */ }
  });

  /** The `Authorization` header for the job endpoints, when a key was given. */
  const auth = () => (el.apiKey.value ? { Authorization: `Bearer ${el.apiKey.value}` } : {});

  /** The server asks for a key: show the field. */
  function askForKey() {
    el.keyField.hidden = false;
    el.apiKey.focus();
  }

  // ---------- helpers ----------

  const fmtBytes = (n) => n < 1024 ? `${n} B`
    : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} kB`
    : `${(n / 1024 / 1024).toFixed(1)} MB`;

  const fmtDuration = (s) => s < 60 ? `${s.toFixed(1)} s`
    : `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;

  const EXT = { png: 'png', jpeg: 'jpg', webp: 'webp' };

  /** A video result's extension by its Content-Type (the containers the server writes). */
  const VIDEO_EXT = { 'video/mp4': 'mp4', 'video/webm': 'webm', 'video/x-matroska': 'mkv', 'video/quicktime': 'mov' };

  // Video names, for files the browser gives no video type: the system's type table may
  // not know a container (or call `.ts` TypeScript). The server tells them by content.
  const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|ts|mts|m2ts|mpe?g|flv|ogv|3gp)$/i;

  /** Whether a chosen file looks like a video, by its type or else its name. */
  function isVideoFile(file) {
    if (file.type.startsWith('video/')) return true;
    return !file.type.startsWith('image/') && VIDEO_NAME.test(file.name);
  }

  /** `photo.jpg` + `_x3` + `png` → `photo_x3.png` (the CLI's names). */
  function outputName(inputName, suffix, format) {
    const base = (inputName || 'image').replace(/^.*[\\/]/, '');
    const dot = base.lastIndexOf('.');
    const stem = dot > 0 ? base.slice(0, dot) : base;
    return `${stem || 'image'}${suffix}.${EXT[format] || format}`;
  }

  /** The output size chosen: `{outscale}`, `{width}` or `{}` (the model's scale). */
  function chosenSize() {
    const v = el.size.value;
    if (v.startsWith('x')) return { outscale: Number(v.slice(1)) };
    if (v === 'width') {
      const w = Math.round(Number(el.sizeWidth.value));
      return Number.isFinite(w) && w >= 1 ? { width: w } : {};
    }
    return {};
  }

  /** The result's size for a `w × h` input with the model's `scale` and the chosen size. */
  function resultSize(w, h, scale, size) {
    if (size.outscale) return [Math.max(1, Math.round(w * size.outscale)), Math.max(1, Math.round(h * size.outscale))];
    if (size.width) return [size.width, Math.max(1, Math.round(h * size.width / w))];
    return [w * scale, h * scale];
  }

  /** The download name's suffix, as `superres upscale` names its outputs. */
  function sizeSuffix(size, scale) {
    if (size.outscale) return `_x${size.outscale}`;
    if (size.width) return `_w${size.width}`;
    return `_x${scale}`;
  }

  function sizeChanged() {
    el.widthField.hidden = el.size.value !== 'width';
    updateFileInfo();
  }
  el.size.addEventListener('change', sizeChanged);
  el.sizeWidth.addEventListener('input', updateFileInfo);

  function selectedModel() {
    return state.models.find((m) => m.name === el.model.value) || null;
  }

  /** Reads an error response's JSON `{error, code}`; tolerates other bodies. */
  async function readError(res) {
    let body = null;
    try {
      const text = await res.text();
      try { body = JSON.parse(text); } catch { body = { error: text.trim() }; }
    } catch { body = {}; }
    // `{error: {message, code}}` is read too, so a proxy's or a newer server's shape still shows.
    const nested = body && body.error && typeof body.error === 'object' ? body.error : null;
    const message = nested ? nested.message : body && body.error;
    const code = nested ? nested.code : body && body.code;
    return { status: res.status, message: message ? String(message) : '', code: code ? String(code) : '' };
  }

  /** Seconds from a Retry-After header (delta-seconds or HTTP date); null if absent. */
  function retryAfterSeconds(res) {
    const v = res.headers.get('Retry-After');
    if (!v) return null;
    if (/^\d+$/.test(v.trim())) return parseInt(v, 10);
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : Math.max(0, Math.ceil((t - Date.now()) / 1000));
  }

  /** Progress as a fraction 0..1 from the job object, whatever shape the server uses. */
  function progressFraction(job) {
    const p = job.progress;
    if (p == null) return null;
    if (typeof p === 'number') return p > 1 ? p / 100 : p;
    if (typeof p === 'object') {
      const done = p.done ?? p.tiles_done ?? p.completed;
      const total = p.total ?? p.tiles_total ?? p.tiles;
      if (typeof done === 'number' && typeof total === 'number' && total > 0) return done / total;
      if (typeof p.fraction === 'number') return p.fraction;
    }
    return null;
  }

  // ---------- messages ----------

  function showStatus(text, { progress = null, cancellable = false } = {}) {
    el.status.hidden = false;
    el.statusText.textContent = text;
    if (progress == null) {
      el.progress.hidden = true;
    } else {
      el.progress.hidden = false;
      el.progress.value = Math.round(Math.max(0, Math.min(1, progress)) * 100);
      el.progress.setAttribute('aria-valuetext', `${el.progress.value}%`);
    }
    el.cancel.hidden = !cancellable;
  }

  function hideStatus() { el.status.hidden = true; }

  function clearError() {
    stopRetry();
    el.error.hidden = true;
    el.error.dataset.code = '';
  }

  function showError(title, text, { code = '', detail = '', retryAfter = null } = {}) {
    hideStatus();
    el.error.hidden = false;
    el.error.dataset.code = code;
    el.errorTitle.textContent = title;
    el.errorText.textContent = text;
    el.errorDetail.textContent = detail ? `Server: ${detail}` : '';
    el.errorDetail.hidden = !detail;
    if (retryAfter != null) startRetry(retryAfter); else stopRetry();
  }

  /** Turns an HTTP error into a message a person can act on: [title, text]. `kind` is the upload's. */
  function explain(err, retryAfter, kind = 'image') {
    const when = retryAfter != null ? `You can retry in ${retryAfter} s.` : 'Try again shortly.';
    // The server's code knows best what it saw; the page's guess covers the codes both kinds share.
    const video = /^video_|_video$/.test(err.code) || (kind === 'video' && !/_image$/.test(err.code));
    switch (err.status) {
      case 413: return video
        ? ['Video too large', "The video is over the server's size limit. Try a shorter or smaller video."]
        : ['Image too large', "The image is over the server's size or pixel limit. Try a smaller image."];
      case 415: if (err.code === 'video_unsupported') return ['Videos not supported', 'This server cannot process videos. Upload an image instead.'];
        return video
          ? ['Unsupported file', 'This file is not a video the server can read. Use a common format such as MP4, WebM or MKV.']
          : ['Unsupported file', 'This file is not an image the server can read. Use a common format such as PNG, JPEG or WebP.'];
      case 422: return video
        ? ['Corrupt video', 'The video could not be read: it may be damaged or truncated.']
        : ['Corrupt image', 'The image could not be decoded: it may be damaged or truncated.'];
      case 401: return ['API key needed', 'This server needs an API key: enter it in the API key field, then try again.'];
      case 403: return ['API key not accepted', 'The server does not know this API key. Check it in the API key field, then try again.'];
      case 429: if (err.code === 'too_many_jobs') return ['Too many jobs', `Your API key already has as many jobs in progress as it may. ${when}`];
        return ['Server busy', `Too many jobs are waiting to be processed. ${when}`];
      case 503: return ['Server not ready', `The server is still starting (loading its models). ${when}`];
      case 400: return ['Bad request', 'The server rejected the upload.'];
      case 404: return ['Not found', 'The job no longer exists on the server.'];
      default: return ['Server error', `Something went wrong on the server (HTTP ${err.status}).`];
    }
  }

  // ---------- retry after 429 / 503 ----------

  function stopRetry() {
    clearInterval(state.retryTimer);
    state.retryTimer = null;
    el.retryBox.hidden = true;
  }

  function startRetry(seconds) {
    stopRetry();
    state.retryAt = Date.now() + seconds * 1000;
    el.retryBox.hidden = false;
    const tick = () => {
      const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      if (left > 0) {
        el.retry.textContent = el.autoRetry.checked ? `Retrying in ${left} s…` : `Retry in ${left} s`;
        el.retry.dataset.wait = String(left);
      } else {
        el.retry.textContent = 'Retry now';
        el.retry.dataset.wait = '0';
        if (el.autoRetry.checked) { stopRetry(); submit(); }
      }
    };
    tick();
    state.retryTimer = setInterval(tick, 250);
  }

  el.retry.addEventListener('click', () => {
    const left = state.retryAt - Date.now();
    if (left <= 0) { stopRetry(); submit(); return; }
    // Pressed during the wait: agree to retry as soon as the wait is over.
    el.autoRetry.checked = true;
  });
  el.autoRetry.addEventListener('change', () => {
    if (el.autoRetry.checked && state.retryAt <= Date.now() && state.retryTimer) { stopRetry(); submit(); }
  });

  // ---------- models ----------

  async function loadModels(attempt = 0) {
    let res;
    try {
      res = await fetch('/v1/models', { headers: { Accept: 'application/json' } });
    } catch {
      return retryModels(attempt, 'Cannot reach the server.');
    }
    if (!res.ok) {
      return retryModels(attempt, res.status === 503 ? 'The server is loading its models…' : `Models unavailable (HTTP ${res.status}).`);
    }
    let list = await res.json();
    if (!Array.isArray(list)) list = list.models || [];
    state.models = list;
    el.model.textContent = '';
    for (const m of list) {
      const opt = document.createElement('option');
      opt.value = m.name;
      opt.textContent = `${m.name} — ×${m.scale}`;
      opt.title = [m.family, m.device, m.precision, m.source].filter(Boolean).join(' · ');
      el.model.append(opt);
    }
    if (!list.length) {
      el.model.append(new Option('No models loaded', ''));
    } else {
      const def = list.find((m) => m.default === true) || list.find((m) => m.name === 'default');
      if (def) el.model.value = def.name;
    }
    el.model.disabled = !list.length;
    updateFileInfo();
    updateSubmit();
  }

  function retryModels(attempt, text) {
    el.model.textContent = '';
    el.model.append(new Option(text, ''));
    el.model.disabled = true;
    updateSubmit();
    setTimeout(() => loadModels(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
  }

  // ---------- device ----------

  const fmtGiB = (n) => `${(n / 1024 ** 3).toFixed(1)} GiB`;

  /** One device from /v1/devices in words: `cuda:0 NVIDIA H200, 12.0 / 140.0 GiB, 45% busy`. */
  function deviceText(d) {
    let text = d.id === 'cpu' ? `CPU (${d.name})` : `${d.id} ${d.name}`;
    if (d.memory_used_bytes != null && d.memory_total_bytes) {
      text += `, ${fmtGiB(d.memory_used_bytes)} / ${fmtGiB(d.memory_total_bytes)}`;
    }
    if (d.utilisation_percent != null) text += `, ${Math.round(d.utilisation_percent)}% busy`;
    return text;
  }

  /** Shows what the models run on in the footer; GPUs' memory and load are refreshed. */
  async function loadDevices() {
    let body;
    try {
      const res = await fetch('/v1/devices', { headers: { Accept: 'application/json' } });
      if (!res.ok) return;
      body = await res.json();
    } catch { return; }
    const devices = Array.isArray(body.devices) ? body.devices : [];
    if (!devices.length) return;
    el.device.textContent = `Runs on ${devices.map(deviceText).join('; ')} · precision ${body.precision}`;
    el.device.title = body.backend || '';
    el.device.hidden = false;
    if (devices.some((d) => d.memory_used_bytes != null || d.utilisation_percent != null)) {
      setTimeout(loadDevices, 10000);
    }
  }

  // ---------- file choice ----------

  function setFile(file) {
    if (!file) return;
    state.file = file;
    releaseProbe();
    if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
    state.inputUrl = URL.createObjectURL(file);
    state.inputSize = null;
    state.inputDuration = null;
    state.inputKind = isVideoFile(file) ? 'video' : 'image';
    state.unreadable = false;
    clearError();
    // The likelier kind first; a file the browser reads as neither is still uploaded as it is.
    const [first, second] = state.inputKind === 'video' ? [probeVideo, probeImage] : [probeImage, probeVideo];
    first(file, () => second(file, () => { state.unreadable = true; el.thumb.hidden = true; updateFileInfo(); }));
    fileChanged();
    updateSubmit();
  }

  /** Reads an image's size and makes it the thumbnail; `onFail` when the browser cannot. */
  function probeImage(file, onFail) {
    const probe = new Image();
    probe.onload = () => {
      if (state.file !== file) return;
      state.inputKind = 'image';
      state.inputSize = { w: probe.naturalWidth, h: probe.naturalHeight };
      el.thumb.src = state.inputUrl;
      el.thumb.hidden = false;
      fileChanged();
    };
    probe.onerror = () => { if (state.file === file) onFail(); };
    probe.src = state.inputUrl;
  }

  /** Reads a video's size and length, and makes a frame near its start the thumbnail;
   *  `onFail` when the browser cannot read it (the server may still: it reads more than browsers). */
  function probeVideo(file, onFail) {
    const probe = document.createElement('video');
    probe.muted = true;
    probe.preload = 'metadata'; // the size and one frame: no need to buffer the rest
    state.probe = probe;
    probe.onloadedmetadata = () => {
      if (state.file !== file) return;
      // Sound only: no picture to upscale, so not a video as far as the page can tell.
      if (!probe.videoWidth) { releaseProbe(); onFail(); return; }
      state.inputKind = 'video';
      state.inputSize = { w: probe.videoWidth, h: probe.videoHeight };
      state.inputDuration = Number.isFinite(probe.duration) ? probe.duration : null;
      el.thumb.hidden = true;
      fileChanged();
      // A seek decodes a frame (at `loadeddata` alone it may still be blank), and a tenth
      // in (at most 1 s) skips a fade from black.
      probe.currentTime = state.inputDuration ? Math.min(1, state.inputDuration / 10) : 0;
    };
    probe.onseeked = () => {
      if (state.file !== file) return;
      const frame = frameImage(probe);
      if (frame) { el.thumb.src = frame; el.thumb.hidden = false; }
      releaseProbe();
    };
    probe.onerror = () => { if (state.file === file) { releaseProbe(); onFail(); } };
    probe.src = state.inputUrl;
  }

  /** Stops the video probe, so that it lets go of the file. */
  function releaseProbe() {
    const probe = state.probe;
    if (!probe) return;
    state.probe = null;
    probe.onloadedmetadata = probe.onseeked = probe.onerror = null;
    probe.removeAttribute('src');
    probe.load();
  }

  /** The video's current frame as a small JPEG data URL; null if it cannot be drawn. */
  function frameImage(video) {
    try {
      const h = Math.min(192, video.videoHeight);
      const w = Math.max(1, Math.round(video.videoWidth * h / video.videoHeight));
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      canvas.getContext('2d').drawImage(video, 0, 0, w, h);
      return canvas.toDataURL('image/jpeg', 0.85);
    } catch { return null; }
  }

  function fileChanged() {
    updateFormat();
    updateFileInfo();
  }

  /** The output format is an image's: a video comes back as MP4, the server's default. */
  function updateFormat() {
    const video = !!state.file && state.inputKind === 'video';
    el.format.disabled = video;
    el.formatHint.hidden = !video;
  }

  function updateFileInfo() {
    const f = state.file;
    if (!f) { el.fileInfo.textContent = ''; return; }
    let text = `${f.name} — ${fmtBytes(f.size)}`;
    if (state.inputKind === 'video') text += ', video';
    if (state.inputSize) {
      const { w, h } = state.inputSize;
      text += `, ${w}×${h}`;
      const m = selectedModel();
      if (m && m.scale) {
        const [ow, oh] = resultSize(w, h, m.scale, chosenSize());
        text += ` → ${ow}×${oh}`;
      }
    }
    if (state.inputDuration) text += `, ${fmtDuration(state.inputDuration)}`;
    // TIFF, AVI and the like: the server may read what the browser cannot.
    if (state.unreadable) text += ' (no preview: this browser cannot read it)';
    el.fileInfo.textContent = text;
    el.drop.classList.add('has-file');
    el.drop.querySelector('.drop-title').textContent = f.name;
    el.drop.querySelector('.drop-sub').textContent = 'Press to choose another file, or drop one here';
  }

  function updateSubmit() {
    el.submit.disabled = !state.file || el.model.disabled || !!(state.job && !state.job.done);
  }

  el.drop.addEventListener('click', () => el.file.click());
  el.file.addEventListener('change', () => { setFile(el.file.files[0]); el.file.value = ''; });
  el.model.addEventListener('change', updateFileInfo);

  // Drops anywhere on the page are taken; the drop zone highlights.
  let dragDepth = 0;
  document.addEventListener('dragenter', (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    dragDepth++; document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => {
    if (--dragDepth <= 0) { dragDepth = 0; document.body.classList.remove('dragging'); }
  });
  document.addEventListener('dragover', (e) => { e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    dragDepth = 0; document.body.classList.remove('dragging');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) setFile(f);
  });
  document.addEventListener('paste', (e) => {
    const f = [...(e.clipboardData ? e.clipboardData.files : [])].find((x) => /^(image|video)\//.test(x.type));
    if (f) setFile(f);
  });

  // ---------- the job ----------

  el.form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });

  async function submit() {
    if (!state.file || (state.job && !state.job.done)) return;
    clearError();
    hideResult();
    const fd = new FormData();
    fd.append('image', state.file, state.file.name);
    if (el.model.value) fd.append('model', el.model.value);
    const kind = state.inputKind;
    // The format names an image encoding, a 400 with a video: without one, a video is MP4.
    if (kind !== 'video') fd.append('format', el.format.value);
    const size = chosenSize();
    if (size.outscale) fd.append('outscale', String(size.outscale));
    if (size.width) fd.append('width', String(size.width));
    const job = { id: null, events: null, poll: null, done: false, kind,
      file: state.file, model: selectedModel(), format: kind === 'video' ? null : el.format.value, size };
    state.job = job;
    updateSubmit();
    showStatus(`Uploading ${state.file.name}…`);
    let res;
    try {
      res = await fetch('/v1/jobs', { method: 'POST', body: fd, headers: auth() });
    } catch {
      finishJob(job);
      showError('Connection failed', 'Could not reach the server. Check that it is running, then try again.', { code: 'network' });
      return;
    }
    if (res.status !== 202 && !res.ok) {
      const err = await readError(res);
      const after = retryAfterSeconds(res);
      finishJob(job);
      if (err.status === 401 || err.status === 403) askForKey();
      const [title, text] = explain(err, after, job.kind);
      const retry = err.status === 429 || err.status === 503 ? (after ?? 5) : null;
      showError(title, text, { code: err.code || String(err.status), detail: err.message, retryAfter: retry });
      return;
    }
    const body = await res.json();
    job.id = body.id;
    onJob(job, body);
    follow(job);
  }

  function follow(job) {
    // An EventSource cannot send an Authorization header: with a key, poll instead.
    if (!('EventSource' in window) || el.apiKey.value) { poll(job); return; }
    const es = new EventSource(`/v1/jobs/${encodeURIComponent(job.id)}/events`);
    job.events = es;
    const handle = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      onJob(job, data);
    };
    es.onmessage = handle;
    for (const name of ['status', 'job', 'update', 'progress']) es.addEventListener(name, handle);
    es.onerror = () => {
      // The stream ended or broke before a final state: fall back to polling.
      es.close();
      job.events = null;
      if (!job.done) poll(job);
    };
  }

  async function poll(job) {
    if (job.done) return;
    try {
      const res = await fetch(`/v1/jobs/${encodeURIComponent(job.id)}`, { headers: auth() });
      if (!res.ok) {
        const err = await readError(res);
        finishJob(job);
        const [title, text] = explain(err, null, job.kind);
        showError(title, text, { code: err.code || String(err.status), detail: err.message });
        return;
      }
      onJob(job, await res.json());
    } catch { /* transient: try again */ }
    if (!job.done) job.poll = setTimeout(() => poll(job), 500);
  }

  /** What a running job is at: for a video, the frame in work. */
  function runningText(data) {
    if (data.kind !== 'video') return 'Upscaling…';
    // No count yet while the server opens the video.
    if (typeof data.frames_done !== 'number') return 'Upscaling the video…';
    const total = typeof data.frames_total === 'number' && data.frames_total > 0 ? data.frames_total : null;
    // `frames_done` counts finished frames: the one in work is the next, the last once all are done.
    const frame = total ? Math.min(data.frames_done + 1, total) : data.frames_done + 1;
    return total ? `Upscaling frame ${frame} of ${total}…` : `Upscaling frame ${frame}…`;
  }

  function onJob(job, data) {
    if (job.done || state.job !== job) return;
    if (data.kind) job.kind = data.kind;
    switch (data.status) {
      case 'queued': {
        const pos = data.position;
        // `position` counts the jobs ahead of this one, images and videos alike.
        showStatus(pos == null ? 'Queued…'
          : pos <= 0 ? 'Queued: starts next…'
          : `Queued: ${pos} ${pos === 1 ? 'job' : 'jobs'} ahead…`, { cancellable: true });
        break;
      }
      case 'running': {
        const f = progressFraction(data);
        const what = job.cancelling ? 'Cancelling…' : runningText(data);
        showStatus(f == null ? what : `${what} ${Math.round(f * 100)}%`, { progress: f ?? 0, cancellable: !job.cancelling });
        break;
      }
      case 'done':
        finishJob(job);
        showStatus('Fetching the result…', { progress: 1 });
        fetchResult(job);
        break;
      case 'failed':
        finishJob(job);
        showError('Upscaling failed', data.error ? `The job failed: ${data.error}` : 'The job failed on the server.', { code: 'failed' });
        break;
      case 'cancelled':
        finishJob(job);
        showError('Cancelled', 'The job was cancelled.', { code: 'cancelled' });
        break;
      default: break;
    }
  }

  function finishJob(job) {
    job.done = true;
    if (job.events) { job.events.close(); job.events = null; }
    clearTimeout(job.poll);
    updateSubmit();
  }

  el.cancel.addEventListener('click', async () => {
    const job = state.job;
    if (!job || job.done || !job.id) return;
    job.cancelling = true;
    el.cancel.disabled = true;
    el.statusText.textContent = 'Cancelling…';
    try {
      const res = await fetch(`/v1/jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE', headers: auth() });
      // A queued job is cancelled at once; a running one stops after its current tile,
      // and the event stream reports it.
      if (res.ok) onJob(job, await res.json());
    } catch { /* the event stream reports the outcome */ }
    el.cancel.disabled = false;
  });

  async function fetchResult(job) {
    let res;
    try {
      res = await fetch(`/v1/jobs/${encodeURIComponent(job.id)}/result`, { headers: auth() });
    } catch {
      showError('Connection failed', 'The result could not be downloaded. Try again.', { code: 'network' });
      return;
    }
    if (!res.ok) {
      const err = await readError(res);
      const [title, text] = explain(err, null, job.kind);
      showError(title, text, { code: err.code || String(err.status), detail: err.message });
      return;
    }
    // Fetched whole, as an image is: the server's Content-Disposition names every result
    // `upscaled.*`, which a link to it would download as; a blob takes the page's name.
    const blob = await res.blob();
    if (state.job !== job) return;
    const type = (res.headers.get('Content-Type') || '').split(';')[0].trim().toLowerCase();
    // A video's extension is its type's: the server writes MP4 unless asked for another.
    if (type.startsWith('video/') || job.kind === 'video') showVideoResult(job, blob, VIDEO_EXT[type] || 'mp4');
    else showResult(job, blob);
  }

  // ---------- result and comparison ----------

  function hideResult() {
    el.result.hidden = true;
    stopVideo();
    if (state.resultUrl) { URL.revokeObjectURL(state.resultUrl); state.resultUrl = null; }
  }

  /** Empties the result's <video>, so that it stops playing and lets go of the old result. */
  function stopVideo() {
    const v = el.resultVideo;
    v.onloadedmetadata = v.onerror = null;
    v.pause();
    if (v.hasAttribute('src')) { v.removeAttribute('src'); v.load(); }
  }

  /** A video result: played in the page, with the name an image's would have and its own extension. */
  function showVideoResult(job, blob, ext) {
    state.resultUrl = URL.createObjectURL(blob);
    // The compare view and its zoom are an image's: with no size, they leave the video be.
    state.outSize = null;
    el.imageView.hidden = true;
    const input = state.file === job.file ? state.inputSize : null;
    const v = el.resultVideo;
    const offer = (width) => {
      const scale = job.model && job.model.scale ? job.model.scale
        : input && width ? Math.round(width / input.w) : 1;
      const name = outputName(job.file.name, sizeSuffix(job.size || {}, scale), ext);
      el.download.href = state.resultUrl;
      el.download.download = name;
      el.download.textContent = `Download ${name}`;
      hideStatus();
      el.result.hidden = false;
      el.result.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    };
    v.onloadedmetadata = () => {
      const w = v.videoWidth, h = v.videoHeight;
      const length = Number.isFinite(v.duration) ? ` · ${fmtDuration(v.duration)}` : '';
      el.resultInfo.textContent = `${input ? `${input.w}×${input.h} → ` : ''}${w}×${h}${length} · ${fmtBytes(blob.size)}`;
      v.hidden = false;
      offer(w);
    };
    // A container or codec this browser does not play (MKV, HEVC…): the download still works.
    v.onerror = () => {
      stopVideo();
      v.hidden = true;
      el.resultInfo.textContent = `${fmtBytes(blob.size)} · this browser cannot play the video; download it to watch it`;
      offer(0);
    };
    v.src = state.resultUrl;
  }

  function showResult(job, blob) {
    state.resultUrl = URL.createObjectURL(blob);
    el.after.onload = () => {
      const w = el.after.naturalWidth, h = el.after.naturalHeight;
      state.outSize = { w, h };
      const input = state.inputSize;
      const scale = job.model && job.model.scale ? job.model.scale
        : input ? Math.round(w / input.w) : 1;
      const name = outputName(job.file.name, sizeSuffix(job.size || {}, scale), job.format);
      el.download.href = state.resultUrl;
      el.download.download = name;
      el.download.textContent = `Download ${name}`;
      el.resultInfo.textContent = `${input ? `${input.w}×${input.h} → ` : ''}${w}×${h} · ${fmtBytes(blob.size)}`;
      el.before.hidden = !input;
      el.beforeClip.hidden = !input;
      el.divider.hidden = !input;
      el.split.disabled = !input;
      el.resultVideo.hidden = true;
      el.imageView.hidden = false;
      hideStatus();
      el.result.hidden = false;
      state.zoom = 'fit';
      el.zoom.value = 'fit';
      applyZoom();
      el.result.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    };
    el.after.onerror = () => showError('Cannot display the result', 'The browser could not show this image format; the download still works.', { code: 'display' });
    el.before.src = state.inputUrl;
    el.after.src = state.resultUrl;
    // Keep the download available even if the browser cannot display the format.
    el.download.href = state.resultUrl;
  }

  function fitScale() {
    const { w, h } = state.outSize;
    const vw = el.viewport.clientWidth || w;
    const vh = Math.max(200, window.innerHeight * 0.7);
    return Math.min(vw / w, vh / h);
  }

  /** Sizes the stage; keeps the point (cx, cy) of the viewport fixed when given. */
  function applyZoom(cx, cy) {
    if (!state.outSize) return;
    const old = state.scale;
    const s = state.zoom === 'fit' ? fitScale() : state.zoom;
    const vp = el.viewport;
    const px = cx ?? vp.clientWidth / 2, py = cy ?? vp.clientHeight / 2;
    const ox = (vp.scrollLeft + px) / old, oy = (vp.scrollTop + py) / old;
    state.scale = s;
    const { w, h } = state.outSize;
    el.stage.style.width = `${Math.round(w * s)}px`;
    el.stage.style.height = `${Math.round(h * s)}px`;
    el.viewport.classList.toggle('zoomed', state.zoom !== 'fit');
    el.zoom.querySelector('option[value="fit"]').textContent = `Fit (${Math.round(s * 100)}%)`;
    el.after.classList.toggle('pixelated', s >= 2);
    vp.scrollLeft = ox * s - px;
    vp.scrollTop = oy * s - py;
  }

  function setZoom(z, cx, cy) {
    const min = 0.05, max = 32;
    state.zoom = z === 'fit' ? 'fit' : Math.max(min, Math.min(max, z));
    const preset = [...el.zoom.options].find((o) => o.value === String(state.zoom));
    if (!preset) {
      let custom = el.zoom.querySelector('option[data-custom]');
      if (!custom) { custom = new Option('', ''); custom.dataset.custom = '1'; el.zoom.append(custom); }
      custom.value = String(state.zoom);
      custom.textContent = `${Math.round(state.zoom * 100)}%`;
    }
    el.zoom.value = String(state.zoom);
    applyZoom(cx, cy);
  }

  const zoomBy = (factor, cx, cy) => setZoom(state.scale * factor, cx, cy);

  el.zoom.addEventListener('change', () => setZoom(el.zoom.value === 'fit' ? 'fit' : Number(el.zoom.value)));
  el.zoomIn.addEventListener('click', () => zoomBy(2));
  el.zoomOut.addEventListener('click', () => zoomBy(0.5));
  el.pixelated.addEventListener('change', () => el.before.classList.toggle('pixelated', el.pixelated.checked));
  window.addEventListener('resize', () => { if (state.zoom === 'fit' && !el.result.hidden) applyZoom(); });

  el.viewport.addEventListener('wheel', (e) => {
    if (!state.outSize) return;
    e.preventDefault();
    const r = el.viewport.getBoundingClientRect();
    zoomBy(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  el.viewport.addEventListener('keydown', (e) => {
    if (e.key === '+' || e.key === '=') { zoomBy(2); e.preventDefault(); }
    else if (e.key === '-' || e.key === '_') { zoomBy(0.5); e.preventDefault(); }
    else if (e.key === '0') { setZoom('fit'); e.preventDefault(); }
  });

  function setSplit(pct) {
    const v = Math.max(0, Math.min(100, pct));
    el.split.value = String(v);
    el.beforeClip.style.clipPath = `inset(0 ${100 - v}% 0 0)`;
    el.divider.style.left = `${v}%`;
  }
  el.split.addEventListener('input', () => setSplit(Number(el.split.value)));
  setSplit(50);

  // Drag the divider to move the split; drag elsewhere to pan.
  let drag = null;
  el.viewport.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    const onDivider = e.target === el.divider;
    // Touch pans with the browser's own scrolling; only the divider is dragged by hand.
    if (!onDivider && e.pointerType === 'touch') return;
    drag = { mode: onDivider ? 'split' : 'pan', x: e.clientX, y: e.clientY, sl: el.viewport.scrollLeft, st: el.viewport.scrollTop };
    el.viewport.setPointerCapture(e.pointerId);
    el.viewport.classList.add('grabbing');
  });
  el.viewport.addEventListener('pointermove', (e) => {
    if (!drag) return;
    if (drag.mode === 'split') {
      const r = el.stage.getBoundingClientRect();
      setSplit(((e.clientX - r.left) / r.width) * 100);
    } else {
      el.viewport.scrollLeft = drag.sl - (e.clientX - drag.x);
      el.viewport.scrollTop = drag.st - (e.clientY - drag.y);
    }
  });
  const endDrag = () => { drag = null; el.viewport.classList.remove('grabbing'); };
  el.viewport.addEventListener('pointerup', endDrag);
  el.viewport.addEventListener('pointercancel', endDrag);

  loadModels();
  loadDevices();
})();
