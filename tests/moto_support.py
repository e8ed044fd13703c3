"""moto in server mode on loopback, shared by the EC2 publish and deploy tests and the S3
backup test (which has moto check every request's signature and IAM policy: `s3_users`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str


def _policy(action: str) -> str:
    statement = {"Effect": "Allow", "Action": action, "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


class S3Users:
    """IAM users of a moto server that checks requests: once `s3_users` has switched it on,
    moto answers only requests signed with a user's real key (SigV4 checked) and allowed by
    that user's policies, as AWS does. The test's own IAM calls use an admin key."""

    def __init__(self, url: str, admin: AccessKey) -> None:
        self.url = url
        self.admin = admin  # allowed everything: the test's own S3 and IAM calls
        self.iam = boto3.client(
            "iam",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id=admin.key_id,
            aws_secret_access_key=admin.secret,
        )

    def add(self, name: str) -> AccessKey:
        """A new user allowed every S3 action, and its access key."""
        self.iam.create_user(UserName=name)
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        self.allow(name, True)
        return AccessKey(key["AccessKeyId"], key["SecretAccessKey"])

    def allow(self, name: str, allowed: bool) -> None:
        """Give `name` its S3 policy, or take it away (its key then gets Access Denied)."""
        if allowed:
            self.iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=_policy("s3:*"))
        else:
            self.iam.delete_user_policy(UserName=name, PolicyName="s3")


def _check_requests_after(url: str, count: str) -> None:
    """moto's own switch (POST /moto-api/reset-auth): requests after the next `count` are
    checked ("inf": none is)."""
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # moto reads the raw body, not a form
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@contextlib.contextmanager
def s3_users(url: str) -> Iterator[S3Users]:
    """The moto server at `url` checking every request's key and policy until the block ends
    (the switch is moto's process-wide setting: it is always switched back off)."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=url, **CREDENTIALS)
    admin = f"admin-{secrets.token_hex(4)}"  # moto's state outlives one server in a process
    iam.create_user(UserName=admin)
    key = iam.create_access_key(UserName=admin)["AccessKey"]
    iam.put_user_policy(UserName=admin, PolicyName="all", PolicyDocument=_policy("*"))
    _check_requests_after(url, "0")
    try:
        yield S3Users(url, AccessKey(key["AccessKeyId"], key["SecretAccessKey"]))
    finally:
        _check_requests_after(url, "inf")
