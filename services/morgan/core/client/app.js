// Morgan's browser client: talk hands-free or hold to talk, see the transcript and the
// reply as they stream, hear the reply sentence by sentence, browse conversations.
// It speaks /ws/stream (the API key goes in the WebSocket subprotocols, never the URL)
// and /api/conversations (X-API-Key). No build step: plain ES modules.

const $ = (id) => document.getElementById(id);

// What happened, for people debugging and for the browser test.
const stats = {
  state: "idle",
  transcripts: [],
  partials: 0,
  replies: [],
  audioReceived: 0,
  audioStarted: 0, // sentences whose playback began
  audioPlayed: 0, // ... and played to their end
  audioStopped: 0, // ... and were cut off by an interruption
  interruptions: 0,
  conversations: 0, // listed in the sidebar
  errors: [],
};
window.morgan = stats;

let ws = null;
let key = "";
let mode = "hands_free";
let conversationId = null;
let capture = null; // {context, node, stream}
let recording = null; // push-to-talk: Int16Array frames while the button is held
let assistantItem = null;

// ------------------------------------------------------------------ status and turns

function setStatus(text, state) {
  $("status").textContent = text;
  if (state) stats.state = state;
}

function addTurn(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("turns").appendChild(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// ------------------------------------------------------------------ playback

const player = { context: null, next: 0, sources: new Set() };

function playerContext() {
  if (!player.context) player.context = new AudioContext();
  return player.context;
}

async function playWav(base64) {
  stats.audioReceived++;
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const context = playerContext();
  const buffer = await context.decodeAudioData(bytes.buffer);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  const at = Math.max(context.currentTime, player.next);
  player.next = at + buffer.duration;
  player.sources.add(source);
  source.onended = () => {
    if (player.sources.delete(source)) stats.audioPlayed++;
  };
  source.start(at);
  stats.audioStarted++;
}

function stopPlayback() {
  const playing = [...player.sources];
  player.sources.clear(); // ended handlers no longer count these as played
  for (const source of playing) source.stop();
  stats.audioStopped += playing.length;
  if (player.context) player.next = player.context.currentTime;
  return playing.length;
}

// ------------------------------------------------------------------ microphone

async function startCapture() {
  const context = new AudioContext({ sampleRate: 16000 });
  await context.audioWorklet.addModule("/client/pcm-worklet.js");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const node = new AudioWorkletNode(context, "pcm-capture");
  node.port.onmessage = (event) => onFrame(event.data);
  context.createMediaStreamSource(stream).connect(node);
  capture = { context, node, stream };
}

function stopCapture() {
  if (!capture) return;
  capture.stream.getTracks().forEach((track) => track.stop());
  capture.context.close();
  capture = null;
}

function onFrame(buffer) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  if (mode === "hands_free") ws.send(buffer);
  else if (recording) recording.push(new Int16Array(buffer));
}

function wavOf(frames) {
  const samples = frames.reduce((n, f) => n + f.length, 0);
  const view = new DataView(new ArrayBuffer(44 + samples * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, 16000, true);
  view.setUint32(28, 32000, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples * 2, true);
  let offset = 44;
  for (const frame of frames) {
    for (const s of frame) {
      view.setInt16(offset, s, true);
      offset += 2;
    }
  }
  return new Uint8Array(view.buffer);
}

function base64Of(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// ------------------------------------------------------------------ the session

function onEvent(event) {
  switch (event.type) {
    case "started":
      setStatus("listening — just talk", "listening");
      break;
    case "speech_started":
      if (stopPlayback()) setStatus("listening (reply stopped)", "listening");
      $("partial").textContent = "…";
      break;
    case "partial_transcription":
      stats.partials++;
      $("partial").textContent = event.text;
      break;
    case "speech_ended":
      setStatus("thinking", "thinking");
      break;
    case "transcription":
      $("partial").textContent = "";
      stats.transcripts.push(event.text);
      if (event.text) addTurn("user", event.text);
      break;
    case "response_text":
      if (!assistantItem) assistantItem = addTurn("assistant", "");
      assistantItem.textContent += event.delta;
      conversationId = event.conversation_id;
      break;
    case "response_audio":
      if ($("speak").checked) playWav(event.data).catch((e) => stats.errors.push(String(e)));
      break;
    case "interrupted":
      stats.interruptions++;
      stopPlayback();
      if (assistantItem) assistantItem.classList.add("interrupted");
      assistantItem = null;
      setTimeout(loadConversations, 1000); // core stores the cut-off turn meanwhile
      break;
    case "response_complete":
      stats.replies.push(event.text);
      conversationId = event.conversation_id;
      if (!assistantItem) addTurn("assistant", event.text);
      assistantItem = null;
      setStatus(mode === "hands_free" ? "listening — just talk" : "ready", "ready");
      loadConversations();
      break;
    case "error":
      stats.errors.push(event.message);
      setStatus(`error ${event.status}: ${event.message}`);
      break;
  }
}

function connect() {
  if (ws) ws.close();
  // A browser cannot set headers on a WebSocket: the key goes in the subprotocols.
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws/stream`, ["morgan", `bearer.${key}`]);
  ws.onopen = () => {
    ws.send(
      JSON.stringify({
        type: "start",
        mode,
        conversation_id: conversationId,
        want_audio: $("speak").checked,
      }),
    );
    setStatus(mode === "hands_free" ? "connecting to voice detection" : "ready", "ready");
    $("talk").disabled = mode !== "push_to_talk";
    $("text").disabled = false;
    document.querySelector("#text-form button").disabled = false;
    $("new-conversation").disabled = false;
  };
  ws.onmessage = (message) => onEvent(JSON.parse(message.data));
  ws.onclose = (event) => {
    setStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`, "closed");
    $("talk").disabled = true;
  };
}

async function loadConversations() {
  const reply = await fetch("/api/conversations", { headers: { "X-API-Key": key } });
  if (!reply.ok) {
    setStatus(`conversations: ${reply.status} ${(await reply.json()).error || ""}`);
    return;
  }
  const list = $("conversations");
  list.replaceChildren();
  stats.conversations = 0;
  for (const conversation of (await reply.json()).conversations) {
    const item = document.createElement("li");
    const when = new Date(conversation.updated_at).toLocaleString();
    const turns = conversation.turn_count;
    item.textContent = `${when} · ${turns} turn${turns === 1 ? "" : "s"}`;
    item.classList.toggle("current", conversation.id === conversationId);
    item.onclick = () => openConversation(conversation.id);
    list.appendChild(item);
    stats.conversations++;
  }
}

async function openConversation(id) {
  const reply = await fetch(`/api/conversations/${id}`, { headers: { "X-API-Key": key } });
  if (!reply.ok) return;
  conversationId = id;
  $("turns").replaceChildren();
  for (const turn of (await reply.json()).turns) {
    addTurn("user", turn.user_text);
    const said = addTurn("assistant", turn.assistant_text);
    if (turn.interrupted) said.classList.add("interrupted");
  }
  connect(); // the session goes on in this conversation
  loadConversations();
}

// ------------------------------------------------------------------ controls

$("connect").onsubmit = async (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  mode = document.querySelector("input[name=mode]:checked").value;
  try {
    if (!capture) await startCapture();
  } catch (error) {
    setStatus(`no microphone: ${error.message}; typing still works`);
  }
  playerContext().resume();
  connect();
  loadConversations();
};

$("new-conversation").onclick = () => {
  conversationId = null;
  $("turns").replaceChildren();
  connect();
};

$("text-form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !ws) return;
  addTurn("user", text);
  ws.send(JSON.stringify({ type: "text", text }));
  $("text").value = "";
};

const talk = $("talk");
const press = () => {
  if (talk.disabled) return;
  stopPlayback();
  recording = [];
  talk.classList.add("recording");
};
const release = () => {
  if (!recording) return;
  const frames = recording;
  recording = null;
  talk.classList.remove("recording");
  if (!frames.length) return;
  ws.send(JSON.stringify({ type: "audio", data: base64Of(wavOf(frames)) }));
  ws.send(JSON.stringify({ type: "utterance_end" }));
  setStatus("thinking", "thinking");
};
talk.addEventListener("pointerdown", press);
talk.addEventListener("pointerup", release);
talk.addEventListener("pointerleave", release);
window.addEventListener("beforeunload", stopCapture);
