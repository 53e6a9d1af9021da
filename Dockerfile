# Runnable image of the agent. Dry-runs need anvil, so the pinned Foundry binary from the npm
# package is copied in; configuration comes from environment (HEDGE_AGENT_*) and a mounted config/.
FROM node:20-bookworm-slim AS foundry
WORKDIR /toolchain
COPY toolchain/package.json toolchain/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEDGE_AGENT_ANVIL=/usr/local/bin/anvil \
    HEDGE_AGENT_ABI_DIR=/app/contracts_abi \
    HEDGE_AGENT_AGENT__LOG_FORMAT=json
RUN useradd --create-home --uid 10001 agent
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY agent/ agent/
COPY contracts_abi/ contracts_abi/
COPY config/ config/
RUN pip install --no-cache-dir --no-deps . && mkdir -p /app/var && chown agent:agent /app/var
COPY --from=foundry /toolchain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil
USER 10001
VOLUME ["/app/config", "/app/var"]
ENTRYPOINT ["hedge-agent"]
CMD ["run", "--config", "config/mainnet.example.toml"]
