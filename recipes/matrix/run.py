"""Synapse's entry point on the appliance: `python3 -m synapse.app.homeserver`, started with
SIGHUP ignored. The acme service sends SIGHUP after a renewal so Synapse re-reads its TLS
certificate; until Synapse has installed its own handler (late in its start-up, minutes
under emulation), the default action would kill it."""

import runpy
import signal
import sys

signal.signal(signal.SIGHUP, signal.SIG_IGN)
sys.argv[0] = "synapse.app.homeserver"
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
