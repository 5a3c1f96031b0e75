# syntax=docker/dockerfile:1
# Three stages: `build` makes the wheel and a venv with the proxy's runtime dependencies;
# `runtime` (the default target) copies only that venv onto a slim Python and runs as a
# non-root user; `vllm-engine` adds the same wheel to a vLLM image, for the scheduler plug-in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# `plugin` brings pyzmq, for pushing programs' service to engines that run the plug-in.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/autellix \
 && /opt/autellix/bin/pip install "$(ls /wheels/autellix_proxy-*.whl)[plugin]" \
 && /opt/autellix/bin/pip uninstall -y setuptools pip  # not needed to run

FROM ${VLLM_IMAGE} AS vllm-engine
# vLLM imports the plug-in's scheduler class by name, so the package must be importable in
# the engine's own environment; its dependencies are already there (vLLM needs them too).
COPY --from=build /wheels /tmp/wheels
RUN python3 -m pip install --no-cache-dir /tmp/wheels/autellix_proxy-*.whl && rm -rf /tmp/wheels

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin autellix
COPY --from=build /opt/autellix /opt/autellix
ENV PATH=/opt/autellix/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8000
ENTRYPOINT ["autellix"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
