#!/bin/sh
# The weekend attack: register extension 1001, then fire calls to Cuba, Sierra Leone, Iridium and
# London, 10 at a time, 100 in all. Every call must end as the gate decides (answered, or refused
# with 403); callgate's log and `callgate status` show what it let through.
set -e
HOST="${SIPP_HOST:-127.0.0.1:5060}"
sipp -sf register.xml -set user 1001 -au 1001 -ap weekend-1001 -m 1 -nostdin -timeout 20s -timeout_error "$HOST"
sipp -sf weekend-attack.xml -inf numbers.csv -set user 1001 -au 1001 -ap weekend-1001 \
  -l 10 -r 10 -m 100 -nostdin -timeout 120s -timeout_error "$HOST"
