"""The browser softphone: an agent's leg that is a web page instead of a phone.

``webrtc.BrowserMedia`` terminates the browser's WebRTC audio (aiortc) and hands it to the
relay as an ordinary G.711 RTP leg.
"""
