"""Media: RTP, G.711, telephone-events, jitter, mixing and tones (pure); relay and ports (asyncio)."""
