"""``callgate doctor``: reads the live dialplan and flags every trunk dial a call can reach without the
gate. ``dialplan`` parses it (``dialplan show`` text or AMI ``ShowDialPlan``), ``targets`` says which
dial targets are trunks, ``entries`` where calls start, ``paths`` walks it as Asterisk would, and
``command`` is the command line (docs/operations.md, "Is every trunk dial gated?")."""
