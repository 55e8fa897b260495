// The uag kiosk page: talks to /v1/voice (docs/PROTOCOL.md). No dependencies, no network
// beyond this origin. State for tests and styling lives in data attributes on <body>.
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body, connection: $('connection'), error: $('error'), talk: $('talk'), talkLabel: $('talk-label'),
  stop: $('stop'), form: $('ask'), question: $('question'), status: $('status'), transcript: $('transcript'),
  answer: $('answer'), sources: $('sources'), timings: $('timings'),
};

// The kiosk key: from the URL the kiosk browser opens (`/?access_token=KEY`), then kept in this
// tab's session storage and taken out of the address bar, so it is not shown, bookmarked or
// sent again with the page's next load.
const TOKEN_KEY = 'uag-access-token';
const params = new URLSearchParams(location.search);
let token = params.get('access_token');
try {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else token = sessionStorage.getItem(TOKEN_KEY);
} catch (_) { /* storage disabled: the key lives in this page only */ }
if (params.has('access_token')) {
  params.delete('access_token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}
let socket = null;
let reconnectDelay = 500;
// A refused key is not a network fault: say so, and ask again only once a minute.
const REFUSED_RETRY_MS = 60000;
let recording = false;
let mic = null; // { context, stream, node, source }
let turn = 0;
let answerText = '';
let pendingAudio = null; // the `audio` event waiting for its binary frame
const player = { context: null, queue: [], playing: null, played: 0 };

function setState(state) { ui.body.dataset.state = state; }
function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
  ui.body.dataset.error = message ? 'true' : 'false';
}
function setStatus(text) { ui.status.textContent = text; }

// ---- connection -------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/v1/voice${token ? `?access_token=${encodeURIComponent(token)}` : ''}`;
  setState('connecting');
  ui.connection.textContent = 'Connecting…';
  socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  let opened = false;
  socket.onopen = () => { opened = true; reconnectDelay = 500; };
  socket.onmessage = (message) => {
    if (typeof message.data === 'string') onEvent(JSON.parse(message.data));
    else onAudio(message.data);
  };
  socket.onclose = async (event) => {
    stopRecording(false);
    ui.talk.disabled = true;
    // A browser does not tell a page why an upgrade failed; the same URL as a plain request
    // does: 401/403 when the key is refused (426 "upgrade required" when it is fine).
    let refused = event.code === 1008;
    if (!opened && !refused) {
      try {
        const probe = await fetch(url.replace(/^ws/, 'http'), { cache: 'no-store' });
        refused = probe.status === 401 || probe.status === 403;
      } catch (_) { /* unreachable: a network fault */ }
    }
    if (refused) {
      setState('unauthorised');
      ui.connection.textContent = 'Not authorised';
      showError(token
        ? 'Not authorised: the appliance refused this page\'s key. Open the page with the kiosk key (?access_token=KEY, docs/DEPLOY.md "Access").'
        : 'Not authorised: open the page with the kiosk key (?access_token=KEY, docs/DEPLOY.md "Access").');
      setTimeout(connect, REFUSED_RETRY_MS);
      return;
    }
    setState('offline');
    ui.connection.textContent = 'Offline';
    showError(`Cannot reach the appliance. Retrying in ${Math.round(reconnectDelay / 1000) || 1} s…`);
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
  };
}

function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  // Audio goes out as binary frames, commands as JSON text.
  socket.send(message instanceof ArrayBuffer ? message : JSON.stringify(message));
}

// ---- events from the server -------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case 'ready':
      setState('ready');
      ui.connection.textContent = 'Ready';
      ui.talk.disabled = false;
      showError('');
      break;
    case 'status':
      setStatus(event.message);
      ui.body.dataset.stage = event.stage;
      break;
    case 'vad':
      if (event.speech === 'started') ui.body.dataset.heard = String(event.turn);
      if (event.speech === 'ended') stopRecording(false);
      break;
    case 'transcript':
      turn = event.turn;
      ui.transcript.textContent = event.text || '(nothing heard)';
      ui.transcript.lang = event.language;
      answerText = '';
      ui.answer.textContent = '';
      ui.sources.textContent = '';
      ui.body.dataset.transcript = 'true';
      setState('busy');
      break;
    case 'delta':
      if (event.turn !== turn) break;
      answerText += event.text;
      renderAnswer();
      break;
    case 'sources':
      if (event.turn !== turn) break;
      renderSources(event.sources);
      renderAnswer();
      break;
    case 'audio':
      pendingAudio = event;
      break;
    case 'done': {
      setState('ready');
      ui.body.dataset.done = String(event.turn);
      const t = event.timings || {};
      const parts = [['speech recognised', t.asr_ms], ['first word', t.first_token_ms], ['first audio', t.first_audio_ms], ['done', t.total_ms]]
        .filter(([, v]) => typeof v === 'number').map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`);
      ui.timings.textContent = parts.join(' · ');
      setStatus(event.reason === 'answered' ? 'Ready' : event.reason === 'no_speech' ? 'Nothing heard; try again' : event.reason === 'cancelled' ? 'Stopped' : 'Something went wrong');
      break;
    }
    case 'error':
      showError(event.message);
      ui.body.dataset.lastError = event.code;
      break;
    default:
      break;
  }
}

// Citation marks like [1] become links to the matching source.
function renderAnswer() {
  ui.answer.textContent = '';
  const parts = answerText.split(/(\[\d+(?:,\s*\d+)*\])/);
  for (const part of parts) {
    const m = part.match(/^\[(\d+(?:,\s*\d+)*)\]$/);
    if (!m) { ui.answer.append(part); continue; }
    m[1].split(/,\s*/).forEach((n, i) => {
      if (i > 0) ui.answer.append(' ');
      const link = document.createElement('a');
      link.className = 'cite';
      link.href = `#source-${n}`;
      link.textContent = `[${n}]`;
      link.addEventListener('click', () => highlightSource(n));
      ui.answer.append(link);
    });
  }
}

// Each source is a button that shows its passage; citation marks in the answer jump to it.
function renderSources(sources) {
  ui.sources.textContent = '';
  for (const s of sources) {
    const item = document.createElement('li');
    item.id = `source-${s.index}`;
    item.value = s.index;
    const title = document.createElement('button');
    title.type = 'button';
    title.className = 'source-title';
    title.setAttribute('aria-expanded', 'false');
    title.textContent = s.section ? `${s.document} — ${s.section}` : s.document;
    item.append(title);
    const snippet = document.createElement('span');
    snippet.className = 'snippet';
    snippet.hidden = true;
    snippet.textContent = s.snippet || '';
    item.append(snippet);
    title.addEventListener('click', () => {
      const open = title.getAttribute('aria-expanded') !== 'true';
      title.setAttribute('aria-expanded', String(open));
      snippet.hidden = !open;
    });
    ui.sources.append(item);
  }
  ui.body.dataset.sources = String(sources.length);
}

function highlightSource(n) {
  for (const li of ui.sources.children) {
    const match = li.id === `source-${n}`;
    li.classList.toggle('highlight', match);
    if (match) {
      li.querySelector('.snippet').hidden = false;
      li.querySelector('.source-title').setAttribute('aria-expanded', 'true');
    }
  }
}

// ---- audio out --------------------------------------------------------------------------

async function onAudio(data) {
  if (!pendingAudio) return;
  const meta = pendingAudio;
  pendingAudio = null;
  if (meta.turn !== turn) return;
  if (!player.context) player.context = new AudioContext();
  try {
    const buffer = await player.context.decodeAudioData(data);
    player.queue.push(buffer);
    ui.body.dataset.audioReceived = String((Number(ui.body.dataset.audioReceived) || 0) + 1);
    playNext();
  } catch (e) {
    showError(`Cannot play the answer's audio: ${e.message}`);
  }
}

function playNext() {
  if (player.playing || player.queue.length === 0) return;
  const source = player.context.createBufferSource();
  source.buffer = player.queue.shift();
  source.connect(player.context.destination);
  source.onended = () => {
    player.playing = null;
    player.played += 1;
    ui.body.dataset.audioPlayed = String(player.played);
    playNext();
  };
  player.playing = source;
  if (player.context.state === 'suspended') player.context.resume();
  source.start();
  ui.body.dataset.audioStarted = String((Number(ui.body.dataset.audioStarted) || 0) + 1);
}

function stopPlayback() {
  player.queue = [];
  if (player.playing) {
    player.playing.onended = null;
    try { player.playing.stop(); } catch (_) { /* already stopped */ }
    player.playing = null;
  }
}

// ---- audio in ---------------------------------------------------------------------------

async function startRecording() {
  stopPlayback(); // barge-in: the user talks over the answer
  try {
    if (!mic) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
      const context = new AudioContext();
      await context.audioWorklet.addModule('/kiosk/capture-worklet.js');
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, 'capture-processor');
      node.port.onmessage = (e) => { if (recording) send(toPcm16(e.data)); };
      source.connect(node);
      mic = { context, stream, node, source };
    }
    if (mic.context.state === 'suspended') await mic.context.resume();
  } catch (e) {
    const denied = e && (e.name === 'NotAllowedError' || e.name === 'SecurityError');
    showError(denied ? 'Microphone access was denied. Allow the microphone, or type your question below.'
      : `No microphone available (${e.message}). Type your question below.`);
    ui.body.dataset.mic = 'denied';
    return;
  }
  ui.body.dataset.mic = 'ok';
  recording = true;
  ui.talk.setAttribute('aria-pressed', 'true');
  ui.talkLabel.textContent = 'Listening… release or tap to send';
  // Push-to-talk: the visitor ends the question (release, or a second tap), so a pause to think
  // never cuts it short; the server's voice detection only reports speech.
  send({ type: 'start', sample_rate: mic.context.sampleRate, encoding: 'pcm_s16le', language: 'auto', endpointing: 'client' });
}

function stopRecording(sendStop) {
  if (!recording) return;
  recording = false;
  ui.talk.setAttribute('aria-pressed', 'false');
  ui.talkLabel.textContent = 'Hold or tap to talk';
  if (sendStop) send({ type: 'stop' });
}

function toPcm16(floats) {
  const out = new Int16Array(floats.length);
  for (let i = 0; i < floats.length; i++) {
    const s = Math.max(-1, Math.min(1, floats[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out.buffer;
}

// ---- controls ---------------------------------------------------------------------------

// The talk button: hold it and release to send (push-to-talk), or tap it, speak, and tap again.
const HOLD_MS = 500;
let pressedAt = 0;
function press() {
  if (recording) { stopRecording(true); pressedAt = 0; return; }
  pressedAt = performance.now();
  startRecording();
}
function release() {
  if (recording && pressedAt && performance.now() - pressedAt >= HOLD_MS) stopRecording(true);
  pressedAt = 0;
}
ui.talk.addEventListener('pointerdown', (e) => { if (e.button === 0 && !ui.talk.disabled) press(); });
ui.talk.addEventListener('pointerup', release);
ui.talk.addEventListener('pointercancel', release);
// Enter or Space on the focused button (a click with no pointer): a tap.
ui.talk.addEventListener('click', (e) => { if (e.detail === 0) { press(); pressedAt = 0; } });
ui.stop.addEventListener('click', () => { stopRecording(false); stopPlayback(); send({ type: 'cancel' }); });
ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.question.value.trim();
  if (!text) return;
  stopPlayback();
  send({ type: 'text', text });
  ui.question.value = '';
});
// Space anywhere but the text box: held, it is push-to-talk; tapped, it toggles.
document.addEventListener('keydown', (e) => {
  if (e.code === 'Space' && document.activeElement !== ui.question && !ui.talk.disabled) {
    e.preventDefault();
    if (!e.repeat) press();
  }
});
document.addEventListener('keyup', (e) => {
  if (e.code === 'Space' && document.activeElement !== ui.question) { e.preventDefault(); release(); }
});

connect();
