"""Pipeline stages, offline render, the asyncio/WebRTC server and the CLI."""
