"""`publish --to ec2`: the disk image as an EBS snapshot, registered as an AMI.

Upload, by default through the EBS direct APIs (what coldsnap and NixOS's upload-ami do):
StartSnapshot, then PutSnapshotBlock for every 512 KiB block that is not all zeros (holes
are skipped without reading), in parallel worker threads, each block with its base64
SHA-256 and retried with full-jitter exponential backoff on throttling / 5xx / connection
errors, then CompleteSnapshot with the LINEAR aggregate checksum and a wait for the
snapshot to be `completed`. If anything fails before that, the half-made snapshot is
deleted. The fallback `--method s3` uploads the raw image to S3 and runs ImportSnapshot.

Then RegisterImage: architecture from the manifest (arm64 / x86_64), UEFI boot, ENA,
IMDSv2 required, root device /dev/xvda (gp3, deleted on termination), hvm.

Idempotent: snapshot and AMI carry the image's sha256 in the tag `appliancekit:sha256`.
Publishing the same image again finds the AMI by that tag and uploads nothing; a completed
snapshot from an earlier run whose registration failed is reused.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliancekit.errors import ToolError, UserError
from appliancekit.publish.bmap import data_extents
from appliancekit.publish.image import VerifiedImage, open_image_dir

EBS_BLOCK = 512 * 1024  # fixed by the EBS direct APIs
GIB = 1 << 30
ARCHITECTURES = {"arm64": "arm64", "amd64": "x86_64"}
TAG_SHA = "appliancekit:sha256"
TAG_UPLOAD = "appliancekit:upload"  # "complete" once CompleteSnapshot succeeded
TAG_SNAPSHOT = "appliancekit:snapshot"  # on the AMI: the snapshot behind it
ROOT_DEVICE = "/dev/xvda"
_RETRY_CODES = frozenset(
    {
        "RequestThrottledException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerException",
        "InternalError",
        "ServiceUnavailableException",
        "ServiceUnavailable",
    }
)
_ZERO_BLOCK = bytes(EBS_BLOCK)


@dataclass
class Ec2Result:
    region: str
    image_id: str
    snapshot_id: str
    name: str
    image_sha256: str
    image_size: int
    bytes_sent: int
    blocks_sent: int
    reused: str | None  # "ami", "snapshot" or None (uploaded now)
    method: str
    seconds: float

    def to_json(self) -> dict:
        return {"to": "ec2", **self.__dict__}


# --- pure parts ------------------------------------------------------------------------


def nonzero_blocks(fd: int, size: int, block: int = EBS_BLOCK) -> Iterator[tuple[int, bytes]]:
    """(block index, data) for each block holding a non-zero byte; the last block is
    padded with zeros to the full block size. Holes are skipped without reading."""
    zero = _ZERO_BLOCK if block == EBS_BLOCK else bytes(block)
    last = -1
    for start, end in data_extents(fd, size):
        for index in range(max(start // block, last + 1), -(-end // block)):
            last = index
            data = os.pread(fd, min(block, size - index * block), index * block)
            if data != zero[: len(data)]:
                yield index, data + zero[: block - len(data)]


def block_checksum(data: bytes) -> tuple[str, bytes]:
    digest = hashlib.sha256(data).digest()
    return base64.b64encode(digest).decode("ascii"), digest


def linear_checksum(digests: dict[int, bytes]) -> str:
    """CompleteSnapshot's LINEAR aggregate: sha256 over the per-block digests in block
    order, base64."""
    total = hashlib.sha256()
    for index in sorted(digests):
        total.update(digests[index])
    return base64.b64encode(total.digest()).decode("ascii")


def volume_size_gib(image_size: int) -> int:
    return max(1, -(-image_size // GIB))


def is_retryable(exc: BaseException) -> bool:
    import botocore.exceptions as bex

    if isinstance(
        exc,
        bex.ConnectionError
        | bex.ReadTimeoutError
        | bex.ConnectTimeoutError
        | bex.ConnectionClosedError,
    ):
        return True
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") in _RETRY_CODES:
            return True
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return False


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    return random.random() * min(cap, base * (2**attempt))


def with_retries(
    call: Callable[[], Any], *, attempts: int, sleep: Callable[[float], None] = time.sleep
) -> Any:
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt + 1 >= attempts or not is_retryable(exc):
                raise
            sleep(backoff(attempt))
    raise AssertionError("unreachable")


def image_tags(image: VerifiedImage) -> dict[str, str]:
    m = image.manifest
    return {
        "Name": f"{m.name}-{image.sha256[:12]}",
        TAG_SHA: image.sha256,
        "appliancekit:name": m.name,
        "appliancekit:recipe": m.recipe,
        "appliancekit:board": m.board,
        "appliancekit:verity-root-hash": m.verity.root_hash if m.verity else "",
    }


def register_params(image: VerifiedImage, snapshot_id: str) -> dict[str, Any]:
    arch = image.manifest.arch
    if arch not in ARCHITECTURES:
        raise UserError(f"EC2 has no {arch} instances (use an arm64 or amd64 board)", field="arch")
    return {
        "Name": f"{image.manifest.name}-{image.sha256[:16]}",
        "Description": f"appliancekit {image.manifest.recipe} for {image.manifest.board}, sha256 {image.sha256}",
        "Architecture": ARCHITECTURES[arch],
        "BootMode": "uefi",
        "EnaSupport": True,
        "ImdsSupport": "v2.0",
        "RootDeviceName": ROOT_DEVICE,
        "VirtualizationType": "hvm",
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE,
                "Ebs": {
                    "SnapshotId": snapshot_id,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                    "VolumeSize": volume_size_gib(image.size),
                },
            }
        ],
    }


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


# --- EBS direct upload -----------------------------------------------------------------


@dataclass
class UploadStats:
    bytes_sent: int = 0
    blocks_sent: int = 0
    retries: int = 0


class EbsUploader:
    def __init__(
        self,
        ebs: Any,
        ec2: Any,
        *,
        workers: int = 16,
        attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        wait_delay: float = 5.0,
        wait_attempts: int = 360,
    ) -> None:
        self.ebs, self.ec2 = ebs, ec2
        self.workers, self.attempts, self.sleep = workers, attempts, sleep
        self.wait_delay, self.wait_attempts = wait_delay, wait_attempts
        self.stats = UploadStats()
        self._lock = threading.Lock()

    def _put(self, snapshot_id: str, index: int, data: bytes, digests: dict[int, bytes]) -> None:
        checksum, digest = block_checksum(data)
        tries = 0

        def call() -> Any:
            nonlocal tries
            tries += 1
            return self.ebs.put_snapshot_block(
                SnapshotId=snapshot_id,
                BlockIndex=index,
                BlockData=data,
                DataLength=len(data),
                Checksum=checksum,
                ChecksumAlgorithm="SHA256",
            )

        with_retries(call, attempts=self.attempts, sleep=self.sleep)
        with self._lock:
            digests[index] = digest
            self.stats.bytes_sent += len(data)
            self.stats.blocks_sent += 1
            self.stats.retries += tries - 1

    def upload(
        self, path: Path, tags: dict[str, str], description: str, *, progress: object | None = None
    ) -> str:
        """Upload `path` as a new snapshot; return its id once it is completed. On any
        failure the snapshot is deleted and the error re-raised."""
        size = os.stat(path).st_size
        start = with_retries(
            lambda: self.ebs.start_snapshot(
                VolumeSize=volume_size_gib(size),
                Tags=_tag_list(tags),
                Description=description[:255],
                ClientToken=str(uuid.uuid4()),
                Timeout=60,
            ),
            attempts=self.attempts,
            sleep=self.sleep,
        )
        snapshot_id = start["SnapshotId"]
        try:
            digests: dict[int, bytes] = {}
            with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(self.workers) as pool:
                pending: set[Future[None]] = set()
                for index, data in nonzero_blocks(f.fileno(), size):
                    if len(pending) >= 2 * self.workers:
                        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for fut in done:
                            fut.result()
                    pending.add(pool.submit(self._put, snapshot_id, index, data, digests))
                    if progress is not None:
                        progress.advance(len(data))  # type: ignore[attr-defined]
                for fut in pending:
                    fut.result()
            done_status = with_retries(
                lambda: self.ebs.complete_snapshot(
                    SnapshotId=snapshot_id,
                    ChangedBlocksCount=len(digests),
                    Checksum=linear_checksum(digests),
                    ChecksumAlgorithm="SHA256",
                    ChecksumAggregationMethod="LINEAR",
                ),
                attempts=self.attempts,
                sleep=self.sleep,
            )["Status"]
            if done_status == "error":
                raise ToolError(f"CompleteSnapshot reported an error for {snapshot_id}")
            self.ec2.get_waiter("snapshot_completed").wait(
                SnapshotIds=[snapshot_id],
                WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": self.wait_attempts},
            )
        except Exception as exc:
            deleted = delete_snapshot(self.ec2, snapshot_id)
            fate = "deleted" if deleted else "could NOT be deleted: delete it by hand"
            raise ToolError(
                f"uploading snapshot {snapshot_id} failed ({describe_error(exc)}); the half-made"
                f" snapshot {fate}"
            ) from exc
        except BaseException:  # KeyboardInterrupt: still clean up
            delete_snapshot(self.ec2, snapshot_id)
            raise
        return snapshot_id


def describe_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        op = getattr(exc, "operation_name", "")
        return f"{op}: {response['Error'].get('Code')}: {response['Error'].get('Message')}".strip(
            ": "
        )
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def delete_snapshot(ec2: Any, snapshot_id: str) -> bool:
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
        return True
    except Exception:
        return False


# --- S3 + ImportSnapshot (fallback) ----------------------------------------------------


def s3_import(
    s3: Any,
    ec2: Any,
    path: Path,
    bucket: str,
    key: str,
    tags: dict[str, str],
    description: str,
    *,
    poll: float = 10.0,
    timeout: float = 3600.0,
) -> str:
    """Upload the raw image to s3://bucket/key, ImportSnapshot it (Format RAW), wait, tag
    the snapshot; the S3 object is removed afterwards either way."""
    s3.upload_file(str(path), bucket, key)
    try:
        try:
            task = ec2.import_snapshot(
                Description=description[:255],
                DiskContainer={
                    "Description": description[:255],
                    "Format": "RAW",
                    "UserBucket": {"S3Bucket": bucket, "S3Key": key},
                },
                ClientToken=hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:64],
            )
        except Exception as exc:
            raise ToolError(
                f"ImportSnapshot failed ({describe_error(exc)}); the S3 object is removed"
            ) from exc
        task_id = task["ImportTaskId"]
        deadline = time.monotonic() + timeout
        while True:
            tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])[
                "ImportSnapshotTasks"
            ]
            detail = tasks[0].get("SnapshotTaskDetail", {}) if tasks else {}
            status = detail.get("Status", "")
            if status == "completed" and detail.get("SnapshotId"):
                snapshot_id = detail["SnapshotId"]
                break
            if status in ("deleted", "deleting") or detail.get("StatusMessage", "").startswith(
                "Error"
            ):
                raise ToolError(
                    f"ImportSnapshot {task_id} failed: {detail.get('StatusMessage', status)}"
                )
            if time.monotonic() > deadline:
                raise ToolError(f"ImportSnapshot {task_id} did not finish in {timeout:.0f}s")
            time.sleep(poll)
        ec2.create_tags(Resources=[snapshot_id], Tags=_tag_list(tags))
        return snapshot_id
    finally:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)


# --- the command -----------------------------------------------------------------------


def find_ami(ec2: Any, sha256: str) -> str | None:
    images = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{TAG_SHA}", "Values": [sha256]}]
    )["Images"]
    usable = [i for i in images if i.get("State") in ("available", "pending")]
    if not usable:
        return None
    return sorted(usable, key=lambda i: i.get("CreationDate", ""))[0]["ImageId"]


def find_snapshot(ec2: Any, sha256: str) -> str | None:
    snaps = ec2.describe_snapshots(
        OwnerIds=["self"],
        Filters=[
            {"Name": f"tag:{TAG_SHA}", "Values": [sha256]},
            {"Name": f"tag:{TAG_UPLOAD}", "Values": ["complete"]},
            {"Name": "status", "Values": ["completed"]},
        ],
    )["Snapshots"]
    return (
        sorted(snaps, key=lambda s: str(s.get("StartTime", "")))[0]["SnapshotId"] if snaps else None
    )


def ami_snapshot(ec2: Any, image_id: str) -> str:
    images = ec2.describe_images(ImageIds=[image_id])["Images"]
    for tag in images[0].get("Tags", []) if images else []:
        if tag["Key"] == TAG_SNAPSHOT:
            return str(tag["Value"])
    for mapping in images[0].get("BlockDeviceMappings", []) if images else []:
        if "Ebs" in mapping:
            return str(mapping["Ebs"].get("SnapshotId", ""))
    return ""


def make_clients(
    region: str, endpoint_url: str | None, workers: int, session: Any = None
) -> tuple[Any, Any, Any]:
    import boto3
    import botocore.config

    session = session or boto3.session.Session()
    control = botocore.config.Config(
        region_name=region, retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10
    )
    data = botocore.config.Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": 1},  # our own retries per block
        max_pool_connections=max(10, workers),
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
    )
    kw = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return (
        session.client("ec2", config=control, **kw),
        session.client("ebs", config=data, **kw),
        session.client("s3", config=control, **kw),
    )


@contextlib.contextmanager
def aws_errors(note: Callable[[], str] = lambda: "") -> Iterator[None]:
    """botocore's errors as one line: missing credentials are the user's to fix, a refused
    API call or a failed transport the host's. `note()` says what was kept for a retry."""
    import botocore.exceptions as bex

    try:
        yield
    except bex.NoCredentialsError:
        raise UserError(
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from None
    except bex.ClientError as exc:
        error = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "AWS call")
        raise ToolError(f"{op} failed: {error.get('Code')}: {error.get('Message')}{note()}") from None
    except (bex.BotoCoreError, bex.WaiterError) as exc:
        raise ToolError(f"AWS: {str(exc).splitlines()[0]}") from None


def publish_ec2(
    image_dir: Path,
    *,
    region: str,
    endpoint_url: str | None = None,
    bucket: str | None = None,
    method: str = "ebs",
    workers: int = 16,
    session: Any = None,
    reporter: object | None = None,
    image: VerifiedImage | None = None,
) -> Ec2Result:
    from appliancekit.output import Reporter

    rep = reporter if isinstance(reporter, Reporter) else Reporter()
    started = time.monotonic()
    if method not in ("ebs", "s3"):
        raise UserError(f"unknown upload method {method!r} (ebs or s3)", field="--method")
    if method == "s3" and not bucket:
        raise UserError("--method s3 needs --bucket", field="--bucket")
    if image is None:
        with rep.progress("verifying image", total=None) as task:
            image = open_image_dir(image_dir, progress=task)
    params_probe = register_params(image, "snap-0")  # rejects unsupported architectures early
    if not image.manifest.board.startswith("ec2"):
        rep.info(
            f"warning: {image.manifest.board} is not an EC2 board: the AMI will not boot unless"
            " the image boots by UEFI from /dev/xvda"
        )
    ec2, ebs, s3 = make_clients(region, endpoint_url, workers, session)
    tags = image_tags(image)
    description = f"appliancekit {image.manifest.name} sha256 {image.sha256}"
    snapshot_id = ""

    def kept() -> str:
        return f" (completed snapshot {snapshot_id} kept for the next publish)" if snapshot_id else ""

    with aws_errors(kept):
        existing = find_ami(ec2, image.sha256)
        if existing:
            return Ec2Result(
                region,
                existing,
                ami_snapshot(ec2, existing),
                params_probe["Name"],
                image.sha256,
                image.size,
                0,
                0,
                "ami",
                method,
                time.monotonic() - started,
            )
        reused = None
        stats = UploadStats()
        snapshot_id = find_snapshot(ec2, image.sha256) or ""
        if snapshot_id:
            reused = "snapshot"
        elif method == "ebs":
            uploader = EbsUploader(ebs, ec2, workers=workers)
            with rep.progress("uploading blocks", total=image.bmap.mapped_bytes) as task:
                snapshot_id = uploader.upload(image.disk, tags, description, progress=task)
            stats = uploader.stats
        else:
            assert bucket is not None
            key = f"appliancekit/{image.manifest.name}-{image.sha256}.img"
            snapshot_id = s3_import(s3, ec2, image.disk, bucket, key, tags, description)
            stats = UploadStats(bytes_sent=image.size, blocks_sent=0)
        ec2.create_tags(Resources=[snapshot_id], Tags=_tag_list({TAG_UPLOAD: "complete"}))
        params = register_params(image, snapshot_id)
        ami_tags = _tag_list({**tags, TAG_SNAPSHOT: snapshot_id})
        params["TagSpecifications"] = [{"ResourceType": "image", "Tags": ami_tags}]
        image_id = ec2.register_image(**params)["ImageId"]
        ec2.create_tags(
            Resources=[image_id], Tags=ami_tags
        )  # for APIs that ignore TagSpecifications
        ec2.get_waiter("image_available").wait(
            ImageIds=[image_id], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )
        return Ec2Result(
            region,
            image_id,
            snapshot_id,
            params["Name"],
            image.sha256,
            image.size,
            stats.bytes_sent,
            stats.blocks_sent,
            reused,
            method,
            time.monotonic() - started,
        )
