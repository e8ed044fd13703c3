"""`publish --to ec2` against moto in server mode on 127.0.0.1.

moto 5 implements the EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
ListSnapshotBlocks, GetSnapshotBlock) well enough to check what we upload block by block.
What it does not do: ImportSnapshot (NotImplementedError, HTTP 500), honour ClientToken or
check checksums, report BlockSize 524288 (it says 512), or store RegisterImage's
Architecture / BootMode / EnaSupport / ImdsSupport / block device mappings / TagSpecifications.
So the RegisterImage parameters are checked as sent, from a botocore event hook, while the
call itself still goes to moto. Faults are injected the same way: a hook raises an AWS error
for one call, everything else is the real client talking to the server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from appliancekit.errors import ToolError, UserError
from appliancekit.manifest import load_manifest
from appliancekit.publish.ec2 import (
    EBS_BLOCK,
    TAG_SHA,
    backoff,
    is_retryable,
    linear_checksum,
    nonzero_blocks,
    publish_ec2,
    register_params,
    volume_size_gib,
)
from appliancekit.publish.image import open_image_dir
from tests.moto_support import CREDENTIALS, REGION, moto_server
from tests.test_publish_support import make_image, needs_disk_tools

pytestmark = needs_disk_tools


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ec2")
    return {
        "arm64": make_image(
            base / "arm", name="syn-ec2-arm64", board="ec2-arm64", data_mib=32, seed=11
        ),
        "amd64": make_image(
            base / "x86",
            name="syn-ec2-x86_64",
            board="ec2-x86_64",
            arch="amd64",
            data_mib=16,
            seed=12,
        ),
        "again": make_image(
            base / "again", name="syn-ec2-again", board="ec2-arm64", data_mib=16, seed=13
        ),
        "fail": make_image(
            base / "fail", name="syn-ec2-fail", board="ec2-arm64", data_mib=16, seed=14
        ),
        "s3": make_image(base / "s3", name="syn-ec2-s3", board="ec2-arm64", data_mib=8, seed=15),
    }


class Recorder:
    """A boto3 session whose calls are recorded (and optionally failed) by event hooks."""

    def __init__(self) -> None:
        self.session = boto3.session.Session(region_name=REGION, **CREDENTIALS)
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.faults: dict[str, Any] = {}
        self.session.events.register("provide-client-params.*.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.setdefault(model.name, []).append(dict(params))
        fault = self.faults.get(model.name)
        if fault is not None:
            error = fault(params, len(self.calls[model.name]))
            if error is not None:
                raise error

    def client(self, service: str, url: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=url, **CREDENTIALS)


def client_error(code: str, status: int, op: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


def expected_blocks(disk: Path) -> dict[int, bytes]:
    data = disk.read_bytes()
    out = {}
    for index in range(-(-len(data) // EBS_BLOCK)):
        block = data[index * EBS_BLOCK : (index + 1) * EBS_BLOCK]
        if any(block):
            out[index] = block.ljust(EBS_BLOCK, b"\0")
    return out


def test_upload_register_and_republish(moto_url: str, images: dict[str, Path]) -> None:
    image_dir = images["arm64"]
    rec = Recorder()
    result = publish_ec2(
        image_dir, region=REGION, endpoint_url=moto_url, session=rec.session, workers=8
    )
    sha = load_manifest(image_dir).disk.sha256
    want = expected_blocks(image_dir / "disk.img")
    # only the non-zero 512 KiB blocks were sent, each with its base64 SHA-256
    puts = rec.calls["PutSnapshotBlock"]
    assert sorted(p["BlockIndex"] for p in puts) == sorted(want)
    assert result.blocks_sent == len(want) and result.bytes_sent == len(want) * EBS_BLOCK
    assert result.bytes_sent < result.image_size / 3
    assert all(p["ChecksumAlgorithm"] == "SHA256" and len(p["Checksum"]) == 44 for p in puts)
    complete = rec.calls["CompleteSnapshot"][0]
    assert (
        complete["ChangedBlocksCount"] == len(want)
        and complete["ChecksumAggregationMethod"] == "LINEAR"
    )
    # and the snapshot holds exactly those bytes
    ebs = rec.client("ebs", moto_url)
    listed = ebs.list_snapshot_blocks(SnapshotId=result.snapshot_id)["Blocks"]
    assert sorted(b["BlockIndex"] for b in listed) == sorted(want)
    for block in listed:
        got = ebs.get_snapshot_block(
            SnapshotId=result.snapshot_id,
            BlockIndex=block["BlockIndex"],
            BlockToken=block["BlockToken"],
        )["BlockData"].read()
        assert got == want[block["BlockIndex"]]
    # RegisterImage as sent
    params = rec.calls["RegisterImage"][0]
    assert params["Architecture"] == "arm64" and params["BootMode"] == "uefi"
    assert params["EnaSupport"] is True and params["ImdsSupport"] == "v2.0"
    assert params["RootDeviceName"] == "/dev/xvda" and params["VirtualizationType"] == "hvm"
    mapping = params["BlockDeviceMappings"][0]
    assert (
        mapping["DeviceName"] == "/dev/xvda" and mapping["Ebs"]["SnapshotId"] == result.snapshot_id
    )
    # the AMI carries the image sha256
    ec2 = rec.client("ec2", moto_url)
    ami = ec2.describe_images(ImageIds=[result.image_id])["Images"][0]
    assert {"Key": TAG_SHA, "Value": sha} in ami["Tags"]
    # publishing again uploads nothing and finds the same AMI
    again = Recorder()
    second = publish_ec2(image_dir, region=REGION, endpoint_url=moto_url, session=again.session)
    assert second.image_id == result.image_id and second.reused == "ami"
    assert (
        second.bytes_sent == 0
        and "PutSnapshotBlock" not in again.calls
        and "StartSnapshot" not in again.calls
    )
    assert second.snapshot_id == result.snapshot_id


def test_amd64_registers_as_x86_64_and_armhf_is_refused(images: dict[str, Path]) -> None:
    image = open_image_dir(images["amd64"])
    assert register_params(image, "snap-1")["Architecture"] == "x86_64"
    from dataclasses import replace

    armhf = replace(image, manifest=replace(image.manifest, arch="armhf"))
    with pytest.raises(UserError, match="no armhf instances"):
        register_params(armhf, "snap-1")


def test_a_failed_block_deletes_the_half_made_snapshot(
    moto_url: str, images: dict[str, Path]
) -> None:
    rec = Recorder()
    rec.faults["PutSnapshotBlock"] = lambda params, n: (
        client_error("ValidationException", 400, "PutSnapshotBlock") if n == 3 else None
    )
    with pytest.raises(ToolError, match="half-made snapshot deleted"):
        publish_ec2(
            images["fail"], region=REGION, endpoint_url=moto_url, session=rec.session, workers=2
        )
    snapshot_id = rec.calls["DeleteSnapshot"][0]["SnapshotId"]
    ec2 = rec.client("ec2", moto_url)
    with pytest.raises(ClientError, match="NotFound"):
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    assert "RegisterImage" not in rec.calls


def test_throttled_blocks_are_retried(moto_url: str, images: dict[str, Path]) -> None:
    rec = Recorder()
    seen: dict[int, int] = {}
    first_block = min(expected_blocks(images["again"] / "disk.img"))

    def throttle_block_one(params: dict[str, Any], n: int) -> ClientError | None:
        if params["BlockIndex"] != first_block:
            return None
        seen[params["BlockIndex"]] = seen.get(params["BlockIndex"], 0) + 1
        return (
            client_error("RequestThrottledException", 400, "PutSnapshotBlock")
            if seen[params["BlockIndex"]] <= 2
            else None
        )

    rec.faults["PutSnapshotBlock"] = throttle_block_one
    result = publish_ec2(
        images["again"], region=REGION, endpoint_url=moto_url, session=rec.session, workers=4
    )
    assert list(seen.values()) == [3]
    assert result.blocks_sent == len(expected_blocks(images["again"] / "disk.img"))


def test_a_completed_snapshot_is_reused_when_registration_failed(
    moto_url: str, images: dict[str, Path]
) -> None:
    image_dir = make_image(
        images["again"].parent / "reg", name="syn-ec2-reg", board="ec2-arm64", data_mib=8, seed=21
    )
    rec = Recorder()
    rec.faults["RegisterImage"] = lambda params, n: client_error(
        "InvalidParameterValue", 400, "RegisterImage"
    )
    with pytest.raises(ToolError, match="kept for the next publish"):
        publish_ec2(image_dir, region=REGION, endpoint_url=moto_url, session=rec.session)
    uploaded = rec.calls["StartSnapshot"]
    assert len(uploaded) == 1 and "DeleteSnapshot" not in rec.calls
    retry = Recorder()
    result = publish_ec2(image_dir, region=REGION, endpoint_url=moto_url, session=retry.session)
    assert result.reused == "snapshot" and result.bytes_sent == 0
    assert "StartSnapshot" not in retry.calls and "RegisterImage" in retry.calls


def test_s3_import_path_uploads_then_reports_moto_lacks_importsnapshot(
    moto_url: str, images: dict[str, Path]
) -> None:
    rec = Recorder()
    s3 = rec.client("s3", moto_url)
    s3.create_bucket(Bucket="ak-images", CreateBucketConfiguration={"LocationConstraint": REGION})
    with pytest.raises(ToolError, match="ImportSnapshot failed"):
        publish_ec2(
            images["s3"],
            region=REGION,
            endpoint_url=moto_url,
            session=rec.session,
            method="s3",
            bucket="ak-images",
        )
    sent = rec.calls["ImportSnapshot"][0]
    assert sent["DiskContainer"]["Format"] == "RAW"
    assert sent["DiskContainer"]["UserBucket"]["S3Bucket"] == "ak-images"
    assert rec.calls.get("PutObject") or rec.calls.get("CreateMultipartUpload")
    assert s3.list_objects_v2(Bucket="ak-images").get("KeyCount", 0) == 0  # cleaned up
    with pytest.raises(UserError, match="needs --bucket"):
        publish_ec2(images["s3"], region=REGION, endpoint_url=moto_url, method="s3")


def test_cli_publish_ec2_json(cli: Any, moto_url: str, images: dict[str, Path]) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
    }
    args = (
        "publish",
        str(images["amd64"]),
        "--to",
        "ec2",
        "--region",
        REGION,
        "--endpoint-url",
        moto_url,
        "--json",
    )
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["image_id"].startswith("ami-") and out["reused"] is None
    assert 0 < out["bytes_sent"] < out["image_size"]
    # in-process from here on (the CLI costs a second per start)
    second = publish_ec2(
        images["amd64"], region=REGION, endpoint_url=moto_url, session=Recorder().session
    )
    assert second.image_id == out["image_id"] and second.bytes_sent == 0 and second.reused == "ami"


def test_missing_credentials_are_a_user_error(
    moto_url: str, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="no AWS credentials"):
        publish_ec2(images["amd64"], region=REGION, endpoint_url=moto_url)


# --- pure parts ------------------------------------------------------------------------


def test_nonzero_blocks_skip_holes_and_zero_blocks_and_pad_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "img"
    with open(path, "wb") as f:
        f.write(b"\1")  # block 0
        f.seek(3 * EBS_BLOCK + 10)
        f.write(b"\0" * 100)  # written zeros in block 3: skipped
        f.seek(5 * EBS_BLOCK + 7)
        f.write(b"\2\2")  # block 5, the short last block
    with open(path, "rb") as f:
        blocks = dict(nonzero_blocks(f.fileno(), os.path.getsize(path)))
    assert sorted(blocks) == [0, 5]
    assert all(len(b) == EBS_BLOCK for b in blocks.values())
    assert blocks[5][7:9] == b"\2\2" and not any(blocks[5][9:])


def test_linear_checksum_is_order_independent_of_completion() -> None:
    import base64
    import hashlib

    digests = {5: hashlib.sha256(b"b").digest(), 1: hashlib.sha256(b"a").digest()}
    expected = base64.b64encode(hashlib.sha256(digests[1] + digests[5]).digest()).decode()
    assert linear_checksum(digests) == expected


def test_retry_classification_and_backoff() -> None:
    assert is_retryable(client_error("RequestThrottledException", 400, "X"))
    assert is_retryable(client_error("Whatever", 503, "X"))
    assert not is_retryable(client_error("ValidationException", 400, "X"))
    assert not is_retryable(ValueError("x"))
    assert all(0 <= backoff(a) <= 5.0 for a in range(20))
    assert volume_size_gib(1) == 1 and volume_size_gib((1 << 30) + 1) == 2
