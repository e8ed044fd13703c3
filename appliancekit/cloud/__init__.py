"""A cloud: one domain's appliances, named by their own DNS appliance and booted together.

model (clouds/*.toml) -> roles (settings each member gets) + records (the zone) -> pdns (the
PowerDNS API) ; network (several QEMU machines on one L2 network) -> boot + checks.
"""
