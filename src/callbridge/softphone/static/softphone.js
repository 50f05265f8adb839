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
  let signedOut = "";       // why the server signed this page out: shown on the sign-in form

  // -- notices ---------------------------------------------------------------------------

  function notify(text, kind) {
    ui.notice.textContent = text;
    ui.notice.className = "notice " + (kind || "error");
    ui.notice.hidden = !text;
  }

  // What the browser's getUserMedia errors mean to an agent (W3C Media Capture §10): the
  // cause and its fix; AFTER_FIX then says what to do next, which depends on what the agent
  // was doing. A failed Answer declines the call, so "press Call again" would mislead there.
  const MIC_ERRORS = {
    NotAllowedError: "Microphone blocked. Click the lock or camera icon in the address bar " +
      "and allow the microphone for this site",
    SecurityError: "The microphone is only available on a secure page (https). " +
      "Ask your administrator to serve the softphone over https",
    NotFoundError: "No microphone found. Plug in a headset or microphone",
    NotReadableError: "The microphone is in use by another application or cannot be read. " +
      "Close other calling apps (Teams, Zoom…) or reconnect the headset",
    OverconstrainedError: "The selected microphone is not available. Choose another input " +
      "device in your system settings",
    AbortError: "The microphone could not be started. Reconnect the headset",
  };
  const AFTER_FIX = {
    call: (fix) => fix + ", then press Call again.",
    answer: (fix) => "The call could not be answered. " + fix + " before the next call.",
  };

  const NO_MICROPHONE_API = "This browser cannot use a microphone. Open the softphone in " +
    "Chrome or Firefox";

  // The microphone for ``action`` ("call" or "answer"); its error says what to do next.
  async function getMicrophone(action) {
    if (microphone) return microphone;
    let fix;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fix = window.isSecureContext ? NO_MICROPHONE_API : MIC_ERRORS.SecurityError;
    } else {
      try {
        microphone = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
        return microphone;
      } catch (err) {
        fix = MIC_ERRORS[err.name] || ("Microphone error: " + err.message);
      }
    }
    throw new Error(AFTER_FIX[action](fix));
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

  // The longest the page waits for ICE gathering before it sends its offer with the candidates
  // it has (no trickle). An unreachable STUN/TURN server would otherwise hold Call and Answer
  // while the browser retransmits to it (RFC 8489 §6.2.1): 40 s in Chromium, over 30 s in
  // Firefox. Host candidates come within milliseconds and suffice on the server's LAN.
  const ICE_GATHERING_MS = 3000;

  function iceGathered(connection) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        connection.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (connection.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, ICE_GATHERING_MS);
      connection.addEventListener("icegatheringstatechange", check);
      check();
    });
  }

  async function offer(mic) {
    pc = new RTCPeerConnection({ iceServers: iceServers });
    pc.ontrack = (event) => listen(event.streams[0] || new MediaStream([event.track]));
    const transceiver = pc.addTransceiver(mic.getAudioTracks()[0],
      { direction: "sendrecv", streams: [mic] });
    preferPcmu(transceiver);
    await pc.setLocalDescription(await pc.createOffer());
    const connection = pc;
    await iceGathered(connection);
    if (pc !== connection) throw new Error("The call was ended.");  // hung up meanwhile
    return connection.localDescription.sdp;
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
    socket.onclose = async (event) => {
      socket = null;
      // 4401: the session is over; its reason also rides in the close frame (RFC 6455 §7.1.6).
      if (event.code === 4401 && !signedOut) signedOut = event.reason || "";
      showIncoming(null);  // the server hangs up a page that went away
      if (callId) endMedia();
      setState(callState === "bridged" ? "ended" : callState);
      ui.state.textContent = "Disconnected — reconnecting…";
      // A refused handshake looks like any other close: ask whether we are still signed in.
      // No answer (the server restarting, the network gone) is no sign-out: keep retrying.
      const why = signedOut;
      signedOut = "";
      let signedIn = true;
      try {
        signedIn = await checkSession(why);
      } catch (err) {
        signedOut = why;
      }
      if (!signedIn) return;
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
        if ((message.reason || message.code) === "SIGNED_OUT") signedOut = message.message || "";
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
    ui.call.disabled = true;  // one offer at a time: gathering takes up to ICE_GATHERING_MS
    let sdp;
    try {
      endMedia();
      sdp = await offer(await getMicrophone("call"));
    } catch (err) {
      endMedia();
      setState(callState);
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
      const sdp = await offer(await getMicrophone("answer"));
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

  // Whether the agent is signed in, showing the phone or the sign-in form; on the form, ``why``
  // the server signed this page out (its SIGNED_OUT message), else no notice.
  async function checkSession(why) {
    const answer = await fetch("/softphone/session", { credentials: "same-origin" });
    const signedIn = answer.ok;
    ui.signin.hidden = signedIn;
    ui.phone.hidden = !signedIn;
    if (!signedIn) notify(why ? sentence(why) : "");
    return signedIn;
  }

  // "signed out: the password changed" -> "Signed out: the password changed."
  function sentence(text) {
    const said = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(said) ? said : said + ".";
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
    let response = null;
    try {
      response = await fetch("/softphone/signout", { method: "POST", credentials: "same-origin" });
    } catch (error) {
      // the server is unreachable: nothing was signed out
    }
    if (!response || !response.ok) {
      notify("Sign out failed: the server could not end this session. Try again.", "error");
      return;  // still signed in: keep the phone as it is
    }
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
