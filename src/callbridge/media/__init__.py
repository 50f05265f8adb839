"""Media: RTP, G.711, telephone-events, jitter, mixing, tones (pure); relay, ports (asyncio)."""
