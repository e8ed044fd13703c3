"""Synapse's entry point on the appliance: `python3 -m synapse.app.homeserver`, started with
SIGHUP ignored, after making the server's signing key on the first boot.

SIGHUP: the acme service sends it after every renewal so Synapse re-reads its TLS
certificate; until Synapse has installed its own handler (late in its start-up, minutes
under emulation), the default action would kill it, and s6 would start it from the
beginning. In a cloud test the certificates renew every two minutes or so, longer than
Synapse's first start under TCG: it never came up.

The signing key: made here, in the process that already ignores SIGHUP (a `setup` step
before it was killed by the same signal), through signedjson alone, in the format Synapse
reads. Synapse's own `synapse._scripts.generate_signing_key` imports the whole `synapse`
package first: 52 s under qemu-aarch64-static against 5.6 s for signedjson. It is written
to a temporary file and renamed, so an interrupted first boot never leaves a partial key."""

import signal

signal.signal(signal.SIGHUP, signal.SIG_IGN)

import os  # noqa: E402  (SIGHUP is ignored first: every import costs time under emulation)
import runpy  # noqa: E402
import secrets  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402

SIGNING_KEY = "/var/lib/synapse/signing.key"  # homeserver.yaml.j2: signing_key_path

if not os.path.exists(SIGNING_KEY):
    from signedjson.key import generate_signing_key, write_signing_keys

    key_id = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
    partial = SIGNING_KEY + ".new"
    with open(partial, "w") as out:
        write_signing_keys(out, (generate_signing_key(key_id),))
    os.rename(partial, SIGNING_KEY)

sys.argv[0] = "synapse.app.homeserver"
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
