# The users setting (NAME:{SCHEME}HASH entries separated by commas or spaces) -> a Dovecot
# passwd-file, one NAME:{SCHEME}HASH line per user. Entries are split only where a new
# "NAME:" starts, so hashes that contain commas (ARGON2's m=...,t=...,p=...) stay whole.
s/[[:space:],]\+\([A-Za-z0-9._-]\+:\)/\n\1/g
s/^[[:space:],]*//
s/[[:space:],]*$//
