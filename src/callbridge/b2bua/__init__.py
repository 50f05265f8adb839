"""The asyncio edge: SIP transports, the user agent service and (later) call control."""
