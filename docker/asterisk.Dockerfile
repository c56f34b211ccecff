# Asterisk built from Debian's source package by the same script the test suite runs.
FROM debian:bookworm
COPY docker/build-asterisk.sh /usr/local/bin/build-asterisk.sh
RUN apt-get update \
 && bash /usr/local/bin/build-asterisk.sh > /tmp/prefix \
 && ln -s "$(tail -n 1 /tmp/prefix)" /opt/asterisk \
 && mkdir -p /var/lib/asterisk /var/spool/asterisk /var/run/asterisk /var/log/asterisk/cdr-csv \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 5060/udp
CMD ["/opt/asterisk/sbin/asterisk", "-f", "-vvv", "-C", "/etc/callgate-asterisk/asterisk.conf"]
