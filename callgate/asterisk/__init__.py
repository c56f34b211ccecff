"""Talking to Asterisk: ARI and AMI clients, the Stasis routing, the gate, the spend feed and the
gate's event stream."""
