# SIPp (Debian's sip-tester) for the weekend-attack scenario.
FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends sip-tester && rm -rf /var/lib/apt/lists/*
