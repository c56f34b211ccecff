"""What an admin runs and reads: policy versions in Redis and the live policy holder, the admin
commands, status, metrics, alerts and the audit trail."""
