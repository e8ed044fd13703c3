# The users setting (NAME:{SCHEME}HASH entries separated by commas or spaces) -> the REST
# server's htpasswd file: one NAME:HASH line per user (the {SCHEME} prefix dropped; the
# server checks bcrypt hashes). Split as the mail server's passwd.sed splits.
s/[[:space:],]\+\([A-Za-z0-9._-]\+:\)/\n\1/g
s/^[[:space:],]*//
s/[[:space:],]*$//
s/^\([^:]*\):{[A-Z0-9.-]*}/\1:/
s/\n\([^:]*\):{[A-Z0-9.-]*}/\n\1:/g
