"""The browser viewer of `serve`: an index of the streams and a page per stream (WebRTC, or MJPEG where WebRTC
is unavailable or ``?mode=mjpeg``; the view switchable; the statistics pushed every half second).

Stream names reach the page as JSON inside a script (``<``, ``>`` and ``&`` escaped) and as escaped HTML, and are
only ever inserted with ``textContent``: a name cannot become markup. The pages load nothing from elsewhere.
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence

from .stamp import JS_READ

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1rem;background:#111;color:#ddd}
a{color:#8cf} .cards{display:flex;flex-wrap:wrap;gap:1rem}
.card{background:#222;padding:.5rem;border-radius:6px;width:340px}
.card img{width:100%;background:#000} .err{color:#f88} table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:right} video,#mjpeg{max-width:100%;background:#000}
"""


def _js_string(value: object) -> str:
    """A value as JSON safe inside <script> (no '</script>', no HTML entities)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def index_page() -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>segformer3d-rt streams</title>
<style>{_STYLE}</style></head><body><h1>Streams</h1><div class="cards" id="cards"></div>
<script>
async function refresh() {{
  const r = await fetch('/api/streams'); if (!r.ok) return;
  const data = await r.json(); const cards = document.getElementById('cards');
  const names = new Set(data.streams.map(s => s.name));
  for (const el of [...cards.children]) if (!names.has(el.dataset.name)) el.remove();
  for (const s of data.streams) {{
    let card = [...cards.children].find(el => el.dataset.name === s.name);
    if (!card) {{
      card = document.createElement('div'); card.className = 'card'; card.dataset.name = s.name;
      const a = document.createElement('a'); a.href = '/view/' + encodeURIComponent(s.name);
      a.className = 'name'; a.textContent = s.name;
      const img = document.createElement('img'); img.src = '/streams/' + encodeURIComponent(s.name) + '/mjpeg';
      const line = document.createElement('div'); line.className = 'line';
      card.append(a, img, line); cards.append(card);
    }}
    const fps = s.recent_fps == null ? '-' : s.recent_fps.toFixed(1);
    const line = card.querySelector('.line');
    line.textContent = `${{s.state}} · ${{fps}} FPS · dropped ${{s.frames.dropped}}` + (s.error ? ' · ' + s.error : '');
    line.className = 'line' + (s.error ? ' err' : '');
  }}
}}
refresh(); setInterval(refresh, 2000);
</script></body></html>"""


def stream_page(name: str, view: str, views: Sequence[str], webrtc: bool) -> str:
    options = "".join(f'<option value="{html.escape(v)}"{" selected" if v == view else ""}>{html.escape(v)}</option>'
                      for v in views)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)} · segformer3d-rt</title>
<style>{_STYLE}</style></head><body>
<p><a href="/">all streams</a></p><h1 id="title"></h1>
<p>view <select id="view">{options}</select> <span id="mode"></span> <span id="state"></span></p>
<video id="video" autoplay muted playsinline hidden></video><img id="mjpeg" hidden alt="">
<table id="stats"><thead><tr><th></th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody></tbody></table>
<p id="summary"></p><p id="error" class="err"></p>
<script>
const NAME = {_js_string(name)}, WEBRTC = {_js_string(webrtc)};
const base = '/api/streams/' + encodeURIComponent(NAME);
document.getElementById('title').textContent = NAME;
const viewer = window.viewer = {{mode: null, pc: null, stats: null, updates: 0}};
function useMjpeg(why) {{
  viewer.mode = 'mjpeg'; document.getElementById('mode').textContent = 'MJPEG' + (why ? ' (' + why + ')' : '');
  const img = document.getElementById('mjpeg'); img.hidden = false;
  img.src = '/streams/' + encodeURIComponent(NAME) + '/mjpeg';
}}
async function useWebrtc() {{
  const pc = new RTCPeerConnection({{iceServers: []}}); viewer.pc = pc;
  pc.addTransceiver('video', {{direction: 'recvonly'}});
  const video = document.getElementById('video');
  pc.ontrack = e => {{ video.srcObject = e.streams[0] || new MediaStream([e.track]); video.hidden = false; }};
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {{
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
    setTimeout(done, 2000);
  }});
  const r = await fetch(base + '/webrtc', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
    body: JSON.stringify({{sdp: pc.localDescription.sdp, type: pc.localDescription.type}})}});
  if (!r.ok) throw new Error((await r.json()).error);
  await pc.setRemoteDescription(await r.json());
  viewer.mode = 'webrtc'; document.getElementById('mode').textContent = 'WebRTC';
}}
const wanted = new URLSearchParams(location.search).get('mode');
if (WEBRTC && wanted !== 'mjpeg' && window.RTCPeerConnection) useWebrtc().catch(e => useMjpeg(e.message));
else useMjpeg(WEBRTC ? '' : 'no WebRTC on the server');
document.getElementById('view').addEventListener('change', async e => {{
  await fetch(base, {{method: 'PATCH', headers: {{'Content-Type': 'application/json'}},
    body: JSON.stringify({{view: e.target.value}})}});
}});
// ?g2g=1: glass-to-glass latency from the capture time painted into each frame (serve --stamp)
if (new URLSearchParams(location.search).get('g2g')) {{
  {JS_READ}
  viewer.g2g = []; let last = null;
  const canvas = document.createElement('canvas'), ctx = canvas.getContext('2d', {{willReadFrequently: true}});
  setInterval(() => {{
    const el = viewer.mode === 'webrtc' ? document.getElementById('video') : document.getElementById('mjpeg');
    const w = el.videoWidth || el.naturalWidth, h = el.videoHeight || el.naturalHeight;
    if (!w || !h) return;
    canvas.width = w; canvas.height = 8; ctx.drawImage(el, 0, 0, w, h, 0, 0, w, h);
    const ms = readStamp(ctx, w);
    if (ms === null || ms === last) return;
    last = ms;
    const lag = (Date.now() % 4294967296 - ms + 4294967296) % 4294967296;
    if (lag < 60000) {{ viewer.g2g.push(lag); if (viewer.g2g.length > 2000) viewer.g2g.shift(); }}
  }}, 5);
}}
const fmt = v => v == null ? '-' : v.toFixed(1);
new EventSource(base + '/events').onmessage = e => {{
  const s = JSON.parse(e.data); viewer.stats = s; viewer.updates += 1;
  const rows = [['capture to output', s.latency], ...Object.entries(s.stages)];
  const body = document.querySelector('#stats tbody'); body.replaceChildren();
  for (const [k, v] of rows) {{
    const tr = document.createElement('tr');
    for (const text of [k, fmt(v.p50), fmt(v.p99)]) {{
      const td = document.createElement('td'); td.textContent = text; tr.append(td);
    }}
    body.append(tr);
  }}
  document.getElementById('state').textContent = s.state;
  document.getElementById('summary').textContent =
    `${{fmt(s.fps)}} FPS · ${{s.frames_out}} frames · dropped ${{s.dropped}} · reconnects ${{s.reconnects}}`;
  document.getElementById('error').textContent = s.error || s.batcher_error || '';
}};
</script></body></html>"""
