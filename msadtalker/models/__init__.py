"""SadTalker / face-vid2vid networks as plain torch modules (no loading, no I/O)."""
