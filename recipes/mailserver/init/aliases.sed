# The users setting -> Postfix's virtual_alias_maps (texthash): the first user receives the
# role addresses every mail domain must have (RFC 2142).
s/^[[:space:],]*//
s/:.*//
s/.\+/postmaster &\nabuse &/
