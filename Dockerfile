# mediaserver: WebRTC media server with server-side neural noise suppression (CPU image).
#
#   docker build -t mediaserver .
#   docker run --network host mediaserver            # then open http://<host>:8080/
#
# Host networking is the simple, working choice: aiortc picks random UDP ports for ICE and has
# no port-range setting, so a bridge network cannot publish them. See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libsndfile comes inside the soundfile wheel, libopus inside opuslib-next-bundled, FFmpeg
# inside av; nothing else is needed from apt for the server itself.

# torch first, from the CPU-only index and with the exact pin: the default PyPI wheel for
# Linux pulls several GB of CUDA libraries. For a GPU image use a CUDA base image and the
# matching torch index instead, then run with --enhancer-device cuda.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY mediaserver ./mediaserver
COPY static ./static
COPY models ./models
# Extras: "" (server only), "asr" (local speech recognition for captions)
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && cd / && rm -rf /src \
    && python -c "from mediaserver.resources import static_dir, models_dir; \
assert (static_dir() / 'index.html').is_file(), static_dir(); print(static_dir(), models_dir())"

RUN useradd --system --create-home --home-dir /var/lib/mediaserver mediaserver
USER mediaserver
WORKDIR /var/lib/mediaserver

ENV MEDIASERVER_HOST=0.0.0.0 \
    MEDIASERVER_PORT=8080
EXPOSE 8080/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"MEDIASERVER_PORT\",\"8080\")}/healthz', timeout=4)"
ENTRYPOINT ["mediaserver"]
CMD ["serve"]
