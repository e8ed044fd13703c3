"""moto in server mode on loopback, shared by the EC2 publish and deploy tests."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

import boto3
import botocore.config

REGION = "eu-central-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (a free port), stopped when the block ends."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto otherwise loads its catalogue of public AMIs per region (2 s each)
    saved = os.environ.get("MOTO_EC2_LOAD_DEFAULT_AMIS")
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto builds each service's app on its first request (~1.5 s of imports): do that in
    # the background while the images fixture runs mkfs/sfdisk
    warm = threading.Thread(target=_warm_up, args=(url,), daemon=True)
    warm.start()
    try:
        yield url
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("MOTO_EC2_LOAD_DEFAULT_AMIS", None)
        else:
            os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = saved


def _warm_up(url: str) -> None:
    for service, call in (("ec2", "describe_regions"), ("ebs", None), ("s3", "list_buckets")):
        client = boto3.client(
            service,
            region_name=REGION,
            endpoint_url=url,
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
            **CREDENTIALS,
        )
        with contextlib.suppress(Exception):  # moto answers the unknown snapshot with a 500
            if call:
                getattr(client, call)()
            else:
                client.list_snapshot_blocks(SnapshotId="snap-00000000000000000")
