"""Sources and sinks: files, mp4, traces, WebRTC tracks, microphones."""
