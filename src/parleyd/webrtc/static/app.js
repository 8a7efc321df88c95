// parleyd demo page: joins a session as a WebRTC peer (no build step, no dependencies).
// Link form: /#session=sess_...&token=...&role=user (the fragment never reaches the server).
// Test-only fragment keys: loopback=1 keeps only 127.0.0.1/::1 candidates in the offer.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("session")) $("session").value = params.get("session");
  if (params.get("token")) $("token").value = params.get("token");
  if (params.get("role")) $("role").value = params.get("role");

  const state = { pc: null, channel: null, mic: null, opened: false, transcripts: [], replies: [], events: [], partial: null };
  window.parley = state;

  function status(text) { $("status").textContent = text; }
  function line(cls, text) {
    const div = document.createElement("div");
    div.className = "line " + cls;
    div.textContent = text;
    $("log").appendChild(div);
    $("log").scrollTop = $("log").scrollHeight;
    return div;
  }

  function keepLoopback(sdp) {
    return sdp.split("\r\n").filter((l) => {
      if (!l.startsWith("a=candidate:")) return true;
      const addr = l.split(" ")[4];
      return addr === "127.0.0.1" || addr === "::1";
    }).join("\r\n");
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000); // send what we have
    });
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "opened") {
      state.opened = true;
      status("connected as " + m.role);
      line("note", "joined the session");
    } else if (m.type === "transcript") {
      state.transcripts.push(m);
      if (m.is_final) { line("user", "you: " + m.text); }
    } else if (m.type === "text" && m.role === "agent") {
      if (!m.is_final) {
        if (!state.partial) state.partial = line("agent partial", "");
        state.partial.textContent += m.text;
      } else {
        if (state.partial) { state.partial.remove(); state.partial = null; }
        state.replies.push(m.text);
        line("agent", "character: " + m.text);
      }
    } else if (m.type === "text" && m.role === "user") {
      line("user", "you: " + m.text);
    } else if (m.type === "event") {
      state.events.push(m.event);
      if (m.event === "interrupted" && state.partial) { state.partial.textContent += " …"; state.partial = null; }
      if (m.event === "session_paused" || m.event === "session_ended") line("note", m.event.replace("_", " "));
    } else if (m.type === "error") {
      line("note", "error: " + m.message);
    } else if (m.type === "close") {
      status("closed: " + m.reason);
    }
  }

  async function connect() {
    const session = $("session").value.trim(), token = $("token").value.trim(), role = $("role").value;
    if (!session || !token) { status("enter a session id and its access token"); return; }
    $("connect").disabled = true;
    status("connecting…");
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    const channel = pc.createDataChannel("parley");
    state.channel = channel;
    channel.onmessage = onMessage;
    if (role === "user") {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      state.mic = stream.getAudioTracks()[0];
      state.mic.enabled = false; // press to talk
      pc.addTransceiver(state.mic, { direction: "sendrecv", streams: [stream] });
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => {
      const el = ev.track.kind === "audio" ? $("voice") : $("face");
      el.srcObject = new MediaStream([ev.track]);
      el.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") status("connection " + pc.connectionState);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    let sdp = pc.localDescription.sdp;
    if (params.get("loopback") === "1") sdp = keepLoopback(sdp);
    const base = params.get("server") || "";
    const resp = await fetch(base + "/v1/sessions/" + encodeURIComponent(session) + "/webrtc", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
      body: JSON.stringify({ sdp: sdp, type: "offer", role: role, takeover: true }),
    });
    const answer = await resp.json();
    if (!resp.ok) {
      status("refused: " + (answer.error ? answer.error.message : resp.status));
      pc.close();
      $("connect").disabled = false;
      return;
    }
    await pc.setRemoteDescription(answer);
    $("hangup").disabled = false;
    for (const id of ["talk", "interrupt", "text", "send"]) $(id).disabled = role !== "user";
  }

  function hangup() {
    if (state.channel && state.channel.readyState === "open") state.channel.send(JSON.stringify({ type: "leave" }));
    if (state.pc) state.pc.close();
    state.pc = null;
    status("not connected");
    $("connect").disabled = false;
    for (const id of ["hangup", "talk", "interrupt", "text", "send"]) $(id).disabled = true;
  }

  function talk(on) {
    if (!state.mic) return;
    state.mic.enabled = on;
    $("talk").classList.toggle("on", on);
    $("talk").textContent = on ? "Listening… (release to stop)" : "Hold to talk";
  }

  $("connect").onclick = () => connect().catch((e) => { status("error: " + e); $("connect").disabled = false; });
  $("hangup").onclick = hangup;
  $("talk").addEventListener("pointerdown", () => talk(true));
  $("talk").addEventListener("pointerup", () => talk(false));
  $("talk").addEventListener("pointerleave", () => talk(false));
  document.addEventListener("keydown", (e) => { if (e.code === "Space" && e.target.tagName !== "INPUT" && !e.repeat) { talk(true); e.preventDefault(); } });
  document.addEventListener("keyup", (e) => { if (e.code === "Space" && e.target.tagName !== "INPUT") talk(false); });
  $("interrupt").onclick = () => { if (state.channel) state.channel.send(JSON.stringify({ type: "interrupt" })); };
  $("say").onsubmit = (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !state.channel || state.channel.readyState !== "open") return;
    state.channel.send(JSON.stringify({ type: "text", text: text }));
    $("text").value = "";
  };
  window.addEventListener("pagehide", () => {
    if (state.channel && state.channel.readyState === "open") state.channel.send(JSON.stringify({ type: "leave" }));
  });
  if (params.get("autoconnect") === "1") $("connect").click();
})();
