// Test clips made with ffmpeg, and what ffprobe reads in a result. ffmpeg is needed as
// Chromium is: without it the video tests fail and say how to get it.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function tool(name, args) {
  try {
    return execFileSync(name, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (e.code === 'ENOENT') throw new Error(`${name} not found: the video tests need it (apt-get install -y ffmpeg)`);
    throw new Error(`${name} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/** Runs `fn(dir)` in a fresh temporary folder, removed afterwards. */
function inTemp(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'superres-e2e-video-'));
  try { return fn(dir); } finally { fs.rmSync(dir, { recursive: true, force: true }); }
}

/**
 * An H.264 MP4 of ffmpeg's `testsrc2` pattern, `width`×`height` at `fps` for `seconds`;
 * with `audio`, a 440 Hz AAC tone as well; with `webm`, VP9 in WebM instead.
 */
function makeClip({ width, height, fps = 10, seconds = 1, audio = false, webm = false }) {
  return inTemp((dir) => {
    const out = path.join(dir, webm ? 'clip.webm' : 'clip.mp4');
    const args = ['-v', 'error', '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}:duration=${seconds}`];
    if (audio) args.push('-f', 'lavfi', '-i', `sine=frequency=440:duration=${seconds}`, '-c:a', webm ? 'libopus' : 'aac', '-shortest');
    args.push('-pix_fmt', 'yuv420p', '-c:v', webm ? 'libvpx-vp9' : 'libx264', '-y', out);
    tool('ffmpeg', args);
    return fs.readFileSync(out);
  });
}

/** What ffprobe reads in `bytes`: the first video stream's size and frame count, and the audio streams. */
function probeClip(bytes) {
  return inTemp((dir) => {
    const file = path.join(dir, 'probe');
    fs.writeFileSync(file, bytes);
    const info = JSON.parse(tool('ffprobe', ['-v', 'error', '-count_frames', '-show_streams', '-of', 'json', file]).toString());
    const video = info.streams.find((s) => s.codec_type === 'video');
    return {
      width: video ? video.width : null,
      height: video ? video.height : null,
      frames: video ? Number(video.nb_read_frames) : null,
      audioStreams: info.streams.filter((s) => s.codec_type === 'audio').length,
    };
  });
}

module.exports = { makeClip, probeClip };
