# The nameservers setting ("192.0.2.53, 198.51.100.53") -> resolv.conf lines
s/^[[:space:],]*//
s/[[:space:],]*$//
s/[[:space:],]\+/\nnameserver /g
s/^/nameserver /
