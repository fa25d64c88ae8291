# syntax=docker/dockerfile:1
# viz-server on CPU. Build: docker build -t viz-server .   Run: docker run -p 8000:8000 -v viz-data:/data viz-server
# Binding 0.0.0.0 inside the container requires the access token: set VIZ_SERVER_TOKEN, or open the
# sign-in link the server prints on its first start (the token is kept in /data).
# The image installs the wheel, not the source tree: what runs is what `pip install viz-server[cpu]` gives.

FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY viz_server ./viz_server
COPY plugins ./plugins
COPY models ./models
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim
# MALLOC_ARENA_MAX: glibc would give each request thread a malloc arena of its own, and freed upload buffers
# would stay spread over them (tests/web/test_load.py measures the difference under load).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2 \
    VIZ_SERVER_DATA=/data VIZ_SERVER_CACHE=/data/cache
# CPU-only torch wheels keep the image small (the default PyPI wheels bundle CUDA).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2" "torchvision>=0.17"
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist pip install "$(echo /dist/viz_server-*.whl)[cpu]" \
    && useradd --create-home --uid 1000 viz && mkdir -p /data && chown viz /data

USER viz
WORKDIR /home/viz
VOLUME /data
EXPOSE 8000
CMD ["viz-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
