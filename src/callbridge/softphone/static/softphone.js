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
    signout: $("signout"), incoming: $("incoming"), incomingText: $("incoming-text"),
    answer: $("answer"), decline: $("decline"), remote: $("remote"),
  };

  let socket = null;
  let callState = "idle";   // idle, dialing, ringing, bridged, ended
  let muted = false;
  let timerStart = null;
  let timerHandle = null;
  let retryDelay = 1000;
  let microphone = null;    // MediaStream once granted
  let ringing = null;       // the "incoming" message of a call ringing this page
  let callId = null;        // the call this page answered or placed
  let placing = false;      // Call was clicked: the server's first call_id is ours
  let pc = null;            // its RTCPeerConnection
  let iceServers = [];      // [softphone] ice_servers, from the server's hello
  let listening = null;     // the AudioContext analysing what the agent hears
  let analyser = null;      // its analyser, for window.dominantHz()

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

  // -- WebRTC: the page offers (no trickle: ICE gathered first), callbridge answers ---------

  function preferPcmu(transceiver) {
    // G.711 first: the trunk then hears the agent untranscoded (RFC 8829 §4.2.4.1).
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("audio").codecs;
    const kind = (c, mime) => c.mimeType.toLowerCase() === mime;
    transceiver.setCodecPreferences([...codecs.filter((c) => kind(c, "audio/pcmu")),
      ...codecs.filter((c) => kind(c, "audio/opus"))]);
  }

  function listen(stream) {
    stopListening();
    // Chrome feeds a remote WebRTC stream to Web Audio only once a media element plays it.
    ui.remote.srcObject = stream;
    ui.remote.play().catch(() => {});
    listening = new AudioContext();
    listening.resume().catch(() => {});
    analyser = listening.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    listening.createMediaStreamSource(stream).connect(analyser);
  }

  function stopListening() {
    // A running AudioContext holds an audio stream until closed: one per call would pile up
    // over an agent's day.
    if (listening) listening.close().catch(() => {});
    listening = null;
    analyser = null;
    ui.remote.srcObject = null;
  }

  // The strongest frequency the agent hears (Hz), or null while silent: for tests and
  // for a "no audio" hint.
  window.dominantHz = function () {
    if (!analyser) return null;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hzPerBin = analyser.context.sampleRate / analyser.fftSize;
    let best = -1;
    for (let i = Math.ceil(50 / hzPerBin); i < bins.length; i++) {
      if (best < 0 || bins[i] > bins[best]) best = i;
    }
    if (best < 0 || bins[best] < -70) return null;
    return best * hzPerBin;
  };

  async function offer(mic) {
    pc = new RTCPeerConnection({ iceServers: iceServers });
    pc.ontrack = (event) => listen(event.streams[0] || new MediaStream([event.track]));
    const transceiver = pc.addTransceiver(mic.getAudioTracks()[0],
      { direction: "sendrecv", streams: [mic] });
    preferPcmu(transceiver);
    await pc.setLocalDescription(await pc.createOffer());
    if (pc.iceGatheringState !== "complete") {
      await new Promise((resolve) => {
        pc.addEventListener("icegatheringstatechange", () => {
          if (pc.iceGatheringState === "complete") resolve();
        });
      });
    }
    return pc.localDescription.sdp;
  }

  function endMedia() {
    if (pc) pc.close();
    pc = null;
    callId = null;
    stopListening();
  }

  function showIncoming(message) {
    ringing = message;
    ui.incoming.hidden = !message;
    ui.incomingText.textContent = message ? "Incoming call for " + message.to_number : "";
    if (message) ui.number.value = message.to_number;
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
      showIncoming(null);  // the server hangs up a page that went away
      if (callId) endMedia();
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
        iceServers = message.ice_servers || [];
        notify("");
        setState(callState);
        break;
      case "state":
        if (placing && message.call_id && !callId) {
          callId = message.call_id;
          placing = false;
        }
        if (message.state === "bridged" && message.started_at && timerStart === null) {
          startTimer(Date.parse(message.started_at) || Date.now());
        }
        if (message.state) setState(message.state, message.reason);
        break;
      case "incoming":
        showIncoming(message);
        break;
      case "answer":
        if (pc && message.call_id === callId) {
          pc.setRemoteDescription({ type: "answer", sdp: message.sdp })
            .then(() => setState("ringing"))
            .catch((err) => notify("Audio could not start: " + err.message));
        }
        break;
      case "hangup":
        if (ringing && ringing.call_id === message.call_id) showIncoming(null);
        if (message.call_id === callId) {
          endMedia();
          setState("ended");
        }
        break;
      case "error":
        if (placing) {
          placing = false;
          endMedia();
          setState("idle");
        }
        notify(message.message || message.code || message.reason);
        break;
    }
  }

  // -- controls --------------------------------------------------------------------------

  // Call: the click is the user gesture that places the launched call. We offer at once;
  // the server answers our offer (no ring: we are the caller) and then dials the customer.
  ui.call.addEventListener("click", async () => {
    notify("");
    let sdp;
    try {
      endMedia();
      sdp = await offer(await getMicrophone());
    } catch (err) {
      endMedia();
      notify(err.message);
      return;
    }
    const message = { type: "call", to_number: ui.number.value, sdp: sdp };
    if (pending) {
      message.uuid = pending.uuid;
      if (pending.from_number) message.from_number = pending.from_number;
      if (pending.ticket) message.ticket = pending.ticket;
    }
    placing = true;
    send(message);
    setState("dialing");
  });

  ui.answer.addEventListener("click", async () => {
    const call = ringing;
    if (!call) return;
    showIncoming(null);
    notify("");
    try {
      const sdp = await offer(await getMicrophone());
      callId = call.call_id;
      send({ type: "answer", call_id: call.call_id, sdp: sdp });
      setState("dialing");
    } catch (err) {
      send({ type: "hangup", call_id: call.call_id });
      endMedia();
      notify(err.message);
    }
  });

  ui.decline.addEventListener("click", () => {
    if (ringing) send({ type: "hangup", call_id: ringing.call_id });
    showIncoming(null);
  });

  ui.hangup.addEventListener("click", () => {
    send(callId ? { type: "hangup", call_id: callId } : { type: "hangup" });
    endMedia();
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
    if (digit && callId) send({ type: "dtmf", call_id: callId, digits: digit });
  });

  document.addEventListener("keydown", (event) => {
    if (callState !== "bridged" || event.target.tagName === "INPUT") return;
    if (callId && /^[0-9*#]$/.test(event.key)) {
      send({ type: "dtmf", call_id: callId, digits: event.key });
    }
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
