{#- rendered at build time from the public_suffixes setting -#}
{%- if settings.public_suffixes not in ("tld", "icann", "all") -%}
{{ public_suffixes_must_be_tld_icann_or_all }}
{%- endif -%}
# The public suffix list -> the suffixes rspamd compiles (with Hyperscan) into its URL and
# organisational-domain matcher; the result is cached in /data/rspamd, so only the first
# start pays for it. public_suffixes = "{{ settings.public_suffixes }}":
{%- if settings.public_suffixes == "all" %}
# the whole list (~9700 rules: about 5 minutes under QEMU emulation, far less on hardware)
p
{%- else %}
/===BEGIN ICANN DOMAINS===/,/===END ICANN DOMAINS===/{
  /^\/\//d
  /^$/d
  /[^ -~]/d
{%- if settings.public_suffixes == "icann" %}
  # ICANN suffixes in ASCII with up to two labels (com, co.uk: ~4400 rules, ~3 minutes
  # under emulation)
  /\..*\./d
{%- else %}
  # top-level domains only (~1300 rules, ~15 s under emulation); organisational domains
  # under multi-label suffixes (example.co.uk) are then taken one label too short
  /\./d
{%- endif %}
  p
}
{%- endif %}
