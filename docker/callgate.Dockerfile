# callgate itself: the package and its dependencies, nothing else.
FROM python:3.11-slim-bookworm
COPY pyproject.toml README.md /src/
COPY callgate /src/callgate
RUN pip install --no-cache-dir /src && useradd --system callgate
USER callgate
CMD ["callgate", "serve", "--config", "/etc/callgate/callgate.toml"]
