# msadtalker live server, CPU (the default mesh avatar; no checkpoints needed).
#
#   docker build -t msadtalker .
#   docker run --network host -e MSADTALKER_PUBLISHER_TOKENS=... -e MSADTALKER_VIEWER_TOKENS=... msadtalker
#
# Host networking: WebRTC media goes over UDP ports that ICE picks at run time, which a port
# mapping cannot know in advance (see docs/deploy.md). Not built on the project's machines
# (they have no Docker engine): see docs/deploy.md for what was and was not checked.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg: PyAV's codecs are in its wheel, but ffprobe helps debugging recordings; libportaudio2:
# sounddevice imports it (the kiosk); libgomp1: OpenCV's and numba's threads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libportaudio2 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin msadtalker
WORKDIR /opt/msadtalker

# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p msadtalker engines export streamer \
    && touch msadtalker/__init__.py engines/__init__.py export/__init__.py streamer/__init__.py \
    && pip install ".[live]" \
    && pip uninstall -y msadtalker
COPY msadtalker msadtalker
COPY engines engines
COPY export export
COPY streamer streamer
COPY web web
# Editable: the pages are served from web/ beside the packages.
RUN pip install --no-deps -e . \
    && chown -R msadtalker /opt/msadtalker

USER msadtalker
# Prepared avatars and numba's compiled renderer are cached in the user's home.
ENV MSADTALKER_CACHE=/home/msadtalker/.cache/msadtalker \
    NUMBA_CACHE_DIR=/home/msadtalker/.cache/numba
# Prepare the bundled avatar and compile the renderer once, at build time (first sessions start
# warm).
RUN python -c "from streamer.config import Config; from streamer.assembly import stage_factory; stage_factory(Config())()"

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"
# Any address but loopback needs tokens (MSADTALKER_PUBLISHER_TOKENS / _VIEWER_TOKENS /
# _TOKEN_SECRET); without them the server refuses to start rather than serve everyone.
CMD ["msadtalker", "serve", "--host", "0.0.0.0", "--port", "8080"]
