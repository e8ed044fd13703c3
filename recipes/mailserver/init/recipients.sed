# The users setting -> Postfix's local_recipient_maps (texthash): "NAME ok" per user.
s/[[:space:],]\+\([A-Za-z0-9._-]\+:\)/\n\1/g
s/^[[:space:],]*//
s/:[^\n]*/ ok/g
