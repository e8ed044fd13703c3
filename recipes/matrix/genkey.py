"""The server's signing key at first boot, in the format Synapse reads ("ed25519 a_XXXX KEY",
as `synapse._scripts.generate_signing_key` writes it). That script imports the whole
`synapse` package first (its __init__ pulls in Twisted, pydantic and most of Synapse): 52 s
under qemu-aarch64-static against 5.6 s for signedjson alone, and under TCG minutes before
Synapse itself starts importing the same again."""

import secrets
import string
import sys

from signedjson.key import generate_signing_key, write_signing_keys

key_id = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
with open(sys.argv[1], "w") as out:
    write_signing_keys(out, (generate_signing_key(key_id),))
