// callbridge softphone: the page's logic. Vanilla JS, no build step.
// Signalling protocol: see callbridge/softphone/signalling.py (JSON over /softphone/ws).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse(($("callbridge-data") || { textContent: "{}" }).textContent || "{}");
  const pending = data.pending || null;

  const ui = {
    signin: $("signin"), phone: $("phone"), form: $("signin-form"), who: $("who"),
    number: $("number"), state: $("state"), timer: $("timer"), notice: $("notice"),
    call: $("call"), hangup: $("hangup"), mute: $("mute"), keypad: $("keypad"),
    signout: $("signout"),
  };

  let socket = null;
  let callState = "idle";   // idle, dialing, ringing, bridged, ended
  let muted = false;
  let timerStart = null;
  let timerHandle = null;
  let retryDelay = 1000;
  let microphone = null;    // MediaStream once granted

  // -- notices ---------------------------------------------------------------------------

  function notify(text, kind) {
    ui.notice.textContent = text;
    ui.notice.className = "notice " + (kind || "error");
    ui.notice.hidden = !text;
  }

  // What the browser's getUserMedia errors mean to an agent (W3C Media Capture §10).
  const MIC_ERRORS = {
    NotAllowedError: "Microphone blocked. Click the lock or camera icon in the address bar, " +
      "allow the microphone for this site, then press Call again.",
    SecurityError: "The microphone is only available on a secure page (https). " +
      "Ask your administrator to serve the softphone over https.",
    NotFoundError: "No microphone found. Plug in a headset or microphone, then press Call again.",
    NotReadableError: "The microphone is in use by another application or cannot be read. " +
      "Close other calling apps (Teams, Zoom…) or reconnect the headset, then try again.",
    OverconstrainedError: "The selected microphone is not available. Choose another input " +
      "device in your system settings, then try again.",
    AbortError: "The microphone could not be started. Reconnect the headset and try again.",
  };

  async function getMicrophone() {
    if (microphone) return microphone;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error(window.isSecureContext ? "This browser cannot use a microphone." :
        MIC_ERRORS.SecurityError);
    }
    try {
      microphone = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    } catch (err) {
      throw new Error(MIC_ERRORS[err.name] || ("Microphone error: " + err.message));
    }
    return microphone;
  }

  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", async () => {
      if (!microphone) return;
      const devices = await navigator.mediaDevices.enumerateDevices();
      if (!devices.some((d) => d.kind === "audioinput")) {
        notify("Your microphone was disconnected. Plug it back in: the other side cannot hear you.");
      }
    });
  }

  // -- call state and timer --------------------------------------------------------------

  const STATE_TEXT = {
    idle: "Ready", dialing: "Calling you…", ringing: "Ringing the customer…",
    bridged: "Connected", ended: "Call ended",
  };

  function setState(state, reason) {
    callState = state;
    ui.state.textContent = (STATE_TEXT[state] || state) + (reason ? " (" + reason + ")" : "");
    const live = state === "dialing" || state === "ringing" || state === "bridged";
    ui.call.disabled = live || !ui.number.value || !socket || socket.readyState !== 1;
    ui.hangup.disabled = !live;
    ui.mute.disabled = state !== "bridged";
    for (const key of ui.keypad.querySelectorAll("button")) key.disabled = state !== "bridged";
    if (state === "bridged" && timerStart === null) startTimer(Date.now());
    if (!live) stopTimer();
  }

  function startTimer(since) {
    timerStart = since;
    timerHandle = setInterval(showTime, 1000);
    showTime();
  }

  function stopTimer() {
    if (timerHandle) clearInterval(timerHandle);
    timerHandle = null;
    timerStart = null;
  }

  function showTime() {
    const seconds = timerStart === null ? 0 : Math.floor((Date.now() - timerStart) / 1000);
    ui.timer.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
  }

  // -- signalling ------------------------------------------------------------------------

  function send(message) {
    if (socket && socket.readyState === 1) socket.send(JSON.stringify(message));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/softphone/ws");
    socket.onopen = () => {
      retryDelay = 1000;
      send({ type: "hello", version: 1 });
    };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      onMessage(message);
    };
    socket.onclose = async () => {
      socket = null;
      setState(callState === "bridged" ? "ended" : callState);
      ui.state.textContent = "Disconnected — reconnecting…";
      // A refused handshake looks like any other close: ask whether we are still signed in.
      if (!(await checkSession())) return;
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  function onMessage(message) {
    switch (message.type) {
      case "hello":
        ui.who.textContent = "Signed in as " + message.crm_username;
        notify("");
        setState(callState);
        break;
      case "state":
        if (message.state) setState(message.state, message.reason);
        break;
      case "offer":
        // TODO(webrtc): setRemoteDescription(offer), add the microphone track, createAnswer,
        // then send({type: "answer", sdp}); play the remote track in <audio id="remote">.
        break;
      case "answer":
        // TODO(webrtc): setRemoteDescription(answer) after a renegotiation we offered.
        break;
      case "error":
        notify(message.message || message.reason);
        break;
    }
  }

  // -- controls --------------------------------------------------------------------------

  ui.call.addEventListener("click", async () => {
    notify("");
    try {
      await getMicrophone();
    } catch (err) {
      notify(err.message);
      return;
    }
    // TODO(webrtc): create the RTCPeerConnection here, with the microphone track.
    const message = { type: "call", to_number: ui.number.value };
    if (pending) {
      message.uuid = pending.uuid;
      if (pending.from_number) message.from_number = pending.from_number;
      if (pending.ticket) message.ticket = pending.ticket;
    }
    send(message);
    setState("dialing");
  });

  ui.hangup.addEventListener("click", () => {
    send({ type: "hangup" });
    // TODO(webrtc): close the RTCPeerConnection.
    setState("ended");
  });

  ui.mute.addEventListener("click", () => {
    muted = !muted;
    if (microphone) for (const track of microphone.getAudioTracks()) track.enabled = !muted;
    ui.mute.setAttribute("aria-pressed", String(muted));
    ui.mute.textContent = muted ? "Unmute" : "Mute";
    send({ type: "mute", muted: muted });
  });

  ui.keypad.addEventListener("click", (event) => {
    const digit = event.target && event.target.dataset ? event.target.dataset.digit : null;
    if (digit) send({ type: "dtmf", digits: digit });
  });

  document.addEventListener("keydown", (event) => {
    if (callState !== "bridged" || event.target.tagName === "INPUT") return;
    if (/^[0-9*#]$/.test(event.key)) send({ type: "dtmf", digits: event.key });
  });

  // -- signing in ------------------------------------------------------------------------

  async function checkSession() {
    const answer = await fetch("/softphone/session", { credentials: "same-origin" });
    const signedIn = answer.ok;
    ui.signin.hidden = signedIn;
    ui.phone.hidden = !signedIn;
    if (!signedIn) notify("");
    return signedIn;
  }

  ui.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = Object.fromEntries(new FormData(ui.form).entries());
    const answer = await fetch("/softphone/signin", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!answer.ok) {
      const error = await answer.json().catch(() => ({}));
      notify(error.message || "Sign-in failed.");
      return;
    }
    ui.form.reset();
    if (await checkSession()) connect();
  });

  ui.signout.addEventListener("click", async () => {
    await fetch("/softphone/signout", { method: "POST", credentials: "same-origin" });
    if (socket) socket.close();
    await checkSession();
  });

  async function start() {
    if (pending) {
      ui.number.value = pending.to_number;
      notify("Call ready: press Call to start.", "info");
    }
    setState("idle");
    if (await checkSession()) connect();
  }

  start();
})();
