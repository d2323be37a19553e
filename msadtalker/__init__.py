"""MSadTalker: the method. Networks, pose, silence, audio features, avatar preparation and the
CPU mesh renderer. Pure computation: no asyncio, no networking."""

__version__ = "0.1.0"
