"""Offline runs of the same decision code: reading Asterisk CDR files, replay and its report."""
