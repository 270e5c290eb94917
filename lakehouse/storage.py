"""Where everything lives: one lake root, every location derived from it.

``Lake`` is the only code that knows whether the root is a local folder or S3, and
whether this process is a branch. It names locations (landing, raw, cleansed, marts,
quarantine), lists and reads landed files (never writing or deleting them), and hands
delta-rs the storage options it needs.

A branch (pull request N) writes only under ``<root>/branches/pr-N/``. A table it has
not built itself is read from prod, at the Delta version pinned when the branch was
created (zero-copy: the same files, read-only). Every write location is handed out by
``Lake.writable``, which refuses anything outside the branch's prefix.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from deltalake import DeltaTable

from lakehouse import delta, faults
from lakehouse.delta import WritableTable
from lakehouse.layers import GATED_LAYERS, Layer
from lakehouse.pins import BranchPins, load_or_create_pins
from lakehouse.settings import BRANCH_NAME, DeploymentKind, Environment, LakehouseSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from lakehouse.key_index import KeyIndex

log = logging.getLogger(__name__)

LANDING = "landing"
INGEST_LOG_TABLE = "_ingest_log"
"""raw/_ingest_log: one row per landed file ingested (or rejected), the cursor of ingestion."""
BRANCHES = "branches"
"""<root>/branches/pr-N/: everything a branch deployment writes. Nothing else writes there."""


class StorageUnreachableError(RuntimeError):
    """The lake's storage did not answer (refused, timed out, no such bucket)."""


class WriteOutsidePrefixError(PermissionError):
    """A write outside this lake's own prefix: a branch never writes to prod (nor prod to a branch)."""


@dataclass(frozen=True)
class TableRef:
    """Where to read a table: its location and the version readers see there (the
    published one; for a table read from prod, the pinned one). None: nothing to read."""

    uri: str
    version: int | None
    from_prod: bool = False
    opened: DeltaTable | None = field(default=None, compare=False, repr=False)
    """This lake's own table as ``input_table`` opened it (newest version): reading the
    version it already holds needs no second open (on S3, a LIST and every commit since
    the last checkpoint, again)."""


@dataclass(frozen=True)
class LandedFile:
    """A file as delivered under landing/<source>/. Identified by ``key`` and fingerprint."""

    uri: str
    key: str
    """``Lake.file_key``: its path below the root of the lake that listed it."""
    relative_key: str
    size: int
    last_modified: datetime
    fingerprint: str
    unreadable: str | None = None
    """Why the file could not even be fingerprinted (e.g. no read permission); None if it could."""

    @property
    def name(self) -> str:
        return self.relative_key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StoredObject:
    uri: str
    size: int
    last_modified: datetime
    etag: str | None
    """S3's ETag; None on a local folder."""


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class Lake:
    """A lake rooted at a local folder or an ``s3://bucket/prefix``."""

    def __init__(self, settings: LakehouseSettings) -> None:
        self.settings = settings
        faults.arm(settings.fault_point)
        self.environment: Environment = settings.environment
        self.prod_root = settings.lake_root
        """The lake's own root: prod's tables (and the branches/ folder)."""
        branch = self.environment.branch
        self.root = f"{self.prod_root}/{BRANCHES}/{branch}" if branch else self.prod_root
        """Where this lake writes: the prod root, or a branch's prefix under it."""

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_s3(self) -> bool:
        return self.settings.is_s3

    @property
    def is_branch(self) -> bool:
        return self.environment.kind is DeploymentKind.BRANCH

    @cached_property
    def principal(self) -> str:
        """Who this process acts as, recorded with every commit it makes: on S3 the caller
        identity STS reports for its credentials (on AWS the role session, so a run is
        traceable to its task role); on a folder, the OS user and host."""
        if self.is_s3:
            creds = self._boto_session.get_credentials()
            if creds is not None:
                # Every step opens a Lake of its own: ask STS once per process and credentials.
                return _caller_identity(
                    self.settings.s3_endpoint_url,
                    self._boto_session.region_name,
                    creds.get_frozen_credentials(),
                )
        return f"os:{getpass.getuser()}@{socket.gethostname()}"

    def stamp(
        self, run_id: str, asset_key: str, *, action: str = "", reason: str = ""
    ) -> delta.Stamp:
        """The stamp of a commit this process makes in this lake (with its principal)."""
        return delta.Stamp(run_id, asset_key, self.principal, action, reason)

    def cache_dir(self, kind: str) -> Path:
        """Where facts computed once per immutable input (a Delta data file, a compiled
        model) are kept between runs: the work folder, which may be lost at any time."""
        return Path(self.settings.work_dir) / kind

    def key_index(self) -> KeyIndex:
        """Per-file key hashes of this lake's tables (``lakehouse.key_index``), kept in
        the work directory: which files may hold a key, without reading every key."""
        from lakehouse.key_index import KeyIndex

        return KeyIndex(self.cache_dir("key-index"))

    def branch(self, pull_request: int) -> Lake:
        """The branch lake of pull request N over this lake's prod root."""
        return Lake(self.settings.for_environment(DeploymentKind.BRANCH, pull_request))

    # -- locations --------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def prod_uri(self, *parts: str) -> str:
        return "/".join([self.prod_root, *(p.strip("/") for p in parts)])

    def table_uri(self, layer: Layer | str, table: str) -> str:
        """This lake's own location of a table (in a branch: under the branch prefix)."""
        return self.uri(str(layer), table)

    def writable(self, layer: Layer | str, table: str) -> WritableTable:
        uri = self.table_uri(layer, table)
        self.check_writable(uri)
        from lakehouse.contracts import pii_columns
        from lakehouse.erasure import subject_key_columns

        return WritableTable(
            uri,
            self.storage_options,
            gated=layer in GATED_LAYERS,
            # personal data and the ids an erasure looks for: never in the log's statistics
            unindexed_columns=pii_columns(layer, table) | subject_key_columns(layer, table),
            write_threads=self.settings.write_threads,
            parallel_write_rows=self.settings.parallel_write_rows,
        )

    def check_writable(self, uri: str) -> None:
        """Refuse any write outside this lake's prefix: the code-level fence around prod."""
        inside = uri.startswith(self.root + "/")
        branches = self.prod_uri(BRANCHES) + "/"
        if self.is_branch:
            # e.g. root .../branches/pr-1 must not write .../branches/pr-10
            ok = inside and BRANCH_NAME.match(self.root[len(branches) :]) is not None
        else:
            ok = inside and not uri.startswith(branches)
        if not ok:
            raise WriteOutsidePrefixError(
                f"{self.environment}: refusing to write {uri} (outside {self.root}/)"
            )

    # -- reading inputs (a branch falls back to prod, pinned) ----------------------------
    @cached_property
    def pins(self) -> BranchPins:
        """The prod versions this branch reads; recorded at its first use (branch lakes only)."""
        if not self.is_branch:
            raise ValueError(f"{self} is not a branch: it has no pins")
        return load_or_create_pins(self)

    def input_table(self, layer: Layer | str, table: str) -> TableRef:
        """Where to read ``layer/table`` as an input: this lake's own table at its published
        version if it has one, else (in a branch) prod's at the pinned version."""
        own = self.table_uri(layer, table)
        dt = delta.open_table(own, self.storage_options)
        if dt is not None or not self.is_branch:
            return TableRef(own, None if dt is None else delta.table_state(dt).readable, opened=dt)
        pinned = self.pins.tables.get(f"{layer}/{table}")
        if pinned is None:
            return TableRef(own, None)  # prod had no such table when the branch was pinned
        return TableRef(self.prod_uri(str(layer), table), pinned, from_prod=True)

    def input_version(self, layer: Layer | str, table: str) -> int | None:
        """The version of ``layer/table`` an input read sees (published, or pinned in prod)."""
        return self.input_table(layer, table).version

    def reads_prod(self, layer: Layer | str, table: str) -> bool:
        """Whether ``layer/table`` is read from prod, pinned (a branch that has not written
        it); outside a branch never, and nothing is opened to say so."""
        return self.is_branch and self.input_table(layer, table).from_prod

    def open_input(self, ref: TableRef, version: int | None = None) -> DeltaTable | None:
        """``ref``'s table at ``version`` (default: the version readers see); None: nothing
        to read."""
        version = ref.version if version is None else version
        if version is None:
            return None
        if ref.opened is not None and ref.opened.version() == version:
            return ref.opened
        return delta.open_table(ref.uri, self.storage_options, version)

    def published_table(
        self, layer: Layer | str, table: str, version: int | None = None
    ) -> DeltaTable | None:
        """The table as readers see it (published, or pinned in prod); ``version`` asks
        for another version of the same table (time travel). None: nothing to read."""
        if version is not None and not self.is_branch:
            # Only a branch must look first (its own table, or prod's): here the version
            # is opened directly, not the newest first (a log replay each).
            return delta.open_table(self.table_uri(layer, table), self.storage_options, version)
        return self.open_input(self.input_table(layer, table), version)

    def landing_uri(self, source: str) -> str:
        return self.uri(LANDING, source)

    def file_key(self, uri: str) -> str:
        """A landed file's identity in this lake's ingest log and raw's commits: its path
        below the lake root (``landing/orders/2026-11-01.csv``), so a lake copied or moved
        to another folder, bucket or prefix still knows what it has loaded. A file outside
        the root (prod's landing, read by a branch) is known by its URI."""
        prefix = self.root + "/"
        return uri.removeprefix(prefix)

    @property
    def ingest_log_uri(self) -> str:
        return self.table_uri(Layer.RAW, INGEST_LOG_TABLE)

    def check_reachable(self) -> None:
        """Fail fast, naming the cause, when the lake's storage does not answer: a run that
        starts anyway only buries it under every step's retries."""
        if not self.is_s3:
            return
        bucket = self.root.removeprefix("s3://").partition("/")[0]
        try:
            self.s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            code = s3_error_code(exc)
            cause = f"bucket {bucket} does not exist" if code in ("404", "NoSuchBucket") else exc
            raise StorageUnreachableError(f"cannot reach the lake at {self.root}: {cause}") from exc

    # -- storage options for delta-rs / polars -----------------------------------------
    @cached_property
    def storage_options(self) -> dict[str, str]:
        """Options for delta-rs: endpoint and region from settings, credentials from the AWS chain."""
        if not self.is_s3:
            return {}
        settings = self.settings
        # object_store's client: explicit timeouts and a bounded retry budget, so a stalled
        # endpoint fails in bounded time instead of retrying quietly behind the run.
        opts: dict[str, str] = {
            "connect_timeout": _duration(settings.s3_connect_timeout_seconds),
            "timeout": _duration(settings.s3_request_timeout_seconds),
            "max_retries": str(settings.s3_max_retries),
            "retry_timeout": _duration(settings.s3_retry_timeout_seconds),
        }
        if self.settings.s3_endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.settings.s3_endpoint_url
            if self.settings.s3_endpoint_url.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        if self.settings.s3_sse_kms_key_id:
            # delta-rs sends these headers on every data file and log entry it writes.
            opts["AWS_SERVER_SIDE_ENCRYPTION"] = "aws:kms"
            opts["AWS_SSE_KMS_KEY_ID"] = self.settings.s3_sse_kms_key_id
            opts["AWS_SSE_BUCKET_KEY_ENABLED"] = "true"
        session = self._boto_session
        region = self.settings.aws_region or session.region_name
        if region:
            opts["AWS_REGION"] = region
        creds = session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts["AWS_ACCESS_KEY_ID"] = frozen.access_key
            opts["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                opts["AWS_SESSION_TOKEN"] = frozen.token
        return opts

    @cached_property
    def _encryption(self) -> dict[str, Any]:
        """boto3's arguments for the lake's KMS key on a write (none without one)."""
        key = self.settings.s3_sse_kms_key_id
        if not key:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key, "BucketKeyEnabled": True}

    @cached_property
    def _boto_session(self) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.settings.aws_region)

    @cached_property
    def s3(self) -> S3Client:
        from botocore.config import Config

        settings = self.settings
        config = Config(
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_request_timeout_seconds,
            retries={"max_attempts": settings.s3_max_retries + 1, "mode": "standard"},
        )
        return self._boto_session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)

    # -- landed files -----------------------------------------------------------------
    def list_landing(self, source: str, start_after: str | None = None) -> list[LandedFile]:
        """Every file under landing/<source>/, sorted by key (the date-prefixed convention).

        A branch sees its own landed files and prod's as they were when it was pinned.
        """
        files = list(self._iter_landing(self.landing_uri(source), start_after))
        if self.is_branch:
            cutoff = self.pins.landing_as_of
            prod = self._iter_landing(self.prod_uri(LANDING, source), start_after)
            files += [f for f in prod if f.last_modified < cutoff]
        return sorted(files, key=lambda f: (f.relative_key, f.uri))

    def _iter_landing(self, base: str, start_after: str | None) -> Iterator[LandedFile]:
        seen: set[str] = set()
        for obj in self.iter_objects(base, start_after):
            seen.add(obj.uri)
            relative_key = obj.uri[len(base) + 1 :]
            if relative_key.endswith("/"):
                continue  # an S3 "folder" marker
            if not self.is_s3 and relative_key.rsplit("/", 1)[-1].startswith("."):
                continue  # e.g. a .partial file still being written
            unreadable = None
            if obj.etag:
                fingerprint = f"etag:{obj.etag}"
            else:
                try:
                    fingerprint = "sha256:" + self._digests.sha256(Path(obj.uri))
                except OSError as exc:  # e.g. no read permission: this file only is rejected
                    fingerprint = f"unreadable:{obj.size}:{obj.last_modified.isoformat()}"
                    unreadable = f"cannot read the file: {exc.strerror or exc}"
            yield LandedFile(
                obj.uri,
                self.file_key(obj.uri),
                relative_key,
                obj.size,
                obj.last_modified,
                fingerprint,
                unreadable,
            )
        if not self.is_s3:
            self._digests.save(under=base, listed=None if start_after else seen)

    @cached_property
    def _digests(self) -> _DigestCache:
        return _DigestCache(self.settings.work_dir / "landing-digests.json")

    def read_bytes(self, uri: str) -> bytes:
        data = self.read_object(uri)
        if data is None:
            raise FileNotFoundError(uri)
        return data

    def open_stream(self, uri: str) -> BinaryIO:
        """An object as a stream of bytes, read in pieces: a landed file of any size is
        never held whole in memory. Close it (use it as a context manager)."""
        if uri.startswith("s3://"):
            bucket, key = _split_s3(uri)
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            return io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)
        return Path(uri).open("rb")

    def open_seekable(self, uri: str) -> BinaryIO:
        """An object as a seekable stream, for formats read from the end (Parquet's footer,
        then the column chunks it points at). On S3 each read is a ranged GET of the version
        first seen (If-Match its ETag): only what the reader asks for is fetched, nothing is
        spooled, and a replaced object fails the read instead of mixing two versions."""
        if uri.startswith("s3://"):
            bucket, key = _split_s3(uri)
            return cast(BinaryIO, _RangedObject(self.s3, bucket, key))
        return Path(uri).open("rb")

    def put_landing_file(self, source: str, relative_key: str, data: bytes | Path) -> str:
        """Deliver bytes, or a local file (copied in pieces, never read whole), into
        landing/<source>/ (used by the demo and tests, never by ingestion)."""
        parts = relative_key.split("/")
        if (
            not relative_key
            or relative_key.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ValueError(f"landing key {relative_key!r} would point outside landing/{source}/")
        uri = self.uri(LANDING, source, relative_key)
        self.write_object(uri, data)
        return uri

    # -- small objects (landed files, branch pins) ---------------------------------------
    def read_object(self, uri: str) -> bytes | None:
        """An object's bytes, or None if there is none."""
        if uri.startswith("s3://"):
            bucket, key = _split_s3(uri)
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                return None
        path = Path(uri)
        return path.read_bytes() if path.is_file() else None

    def write_object(self, uri: str, data: bytes | Path, *, exclusive: bool = False) -> bool:
        """Write an object atomically, from bytes or a local file (streamed, never read
        whole); with ``exclusive``, only if none exists (returns False
        then; bytes only)."""
        self.check_writable(uri)
        if isinstance(data, Path):
            if exclusive:
                raise ValueError("an exclusive write takes bytes")
            return self._write_file(uri, data)
        if self.is_s3:
            from botocore.exceptions import ClientError

            bucket, key = _split_s3(uri)
            try:
                condition: dict[str, Any] = {"IfNoneMatch": "*"} if exclusive else {}
                self.s3.put_object(
                    Bucket=bucket, Key=key, Body=data, **condition, **self._encryption
                )
            except ClientError as exc:
                if exclusive and exc.response["Error"]["Code"] in ("PreconditionFailed", "412"):
                    return False
                raise
            return True
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(data)
        if exclusive:
            try:
                path.hardlink_to(tmp)  # atomic, and fails if the target exists
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
            return True
        tmp.replace(path)  # atomic rename: a reader never sees half a file
        return True

    def _write_file(self, uri: str, source: Path) -> bool:
        if self.is_s3:
            bucket, key = _split_s3(uri)
            with source.open("rb") as body:  # one streamed PUT (S3 takes up to 5 GB so)
                self.s3.put_object(Bucket=bucket, Key=key, Body=body, **self._encryption)
            return True
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        shutil.copyfile(source, tmp)
        tmp.replace(path)  # atomic rename: a reader never sees half a file
        return True

    # -- whole-lake helpers -----------------------------------------------------------
    def delete_prefix(self, *parts: str) -> int:
        """Delete everything under a location of this lake; returns the number of objects removed."""
        uri = self.uri(*parts)
        self.check_writable(uri + "/")
        return self._delete_under(uri)

    def delete_branch(self, name: str) -> int:
        """Delete ``branches/<name>/`` and nothing else (teardown); prod and local lakes only."""
        if self.is_branch:
            raise WriteOutsidePrefixError(f"{self.environment} cannot delete branch {name!r}")
        if BRANCH_NAME.match(name) is None:
            raise ValueError(f"{name!r} is not a branch name (pr-N)")
        return self._delete_under(self.prod_uri(BRANCHES, name))

    def folder_names(self, uri: str) -> list[str]:
        """The names of the folders directly under a location (S3: its common prefixes)."""
        if not self.is_s3:
            folder = Path(uri)
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        bucket, prefix = _split_s3(uri.rstrip("/") + "/")
        names = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        ):
            names += [
                p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            ]
        return sorted(names)

    def modified_at(self, uri: str) -> datetime:
        """When the storage last wrote an object, by its own clock (S3: whole seconds)."""
        if self.is_s3:
            bucket, key = _split_s3(uri)
            return self.s3.head_object(Bucket=bucket, Key=key)["LastModified"]
        return datetime.fromtimestamp(Path(uri).stat().st_mtime, tz=UTC)

    def iter_noncurrent_versions(self, uri: str) -> Iterator[tuple[str, str]]:
        """``(object URI, version id)`` of every replaced or deleted object version still
        kept under a location (a versioned S3 bucket keeps them until its lifecycle rule
        expires them); none on a folder or an unversioned bucket."""
        if not self.is_s3:
            return
        bucket, prefix = _split_s3(uri.rstrip("/") + "/")
        for page in self.s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for version in page.get("Versions", []):
                if not version["IsLatest"]:
                    yield f"s3://{bucket}/{version['Key']}", version["VersionId"]

    def read_object_version(self, uri: str, version_id: str) -> bytes:
        bucket, key = _split_s3(uri)
        return self.s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()

    def delete_object_everywhere(self, uri: str) -> int:
        """Delete one object and, on S3, every version of it a versioned bucket keeps
        (erasure: old bytes must become unreadable, not merely noncurrent). Returns how
        many objects or versions were deleted."""
        self.check_writable(uri)
        if not self.is_s3:
            path = Path(uri)
            if path.exists():
                path.unlink()
                return 1
            return 0
        bucket, key = _split_s3(uri)
        deleted = 0
        for page in self.s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=key
        ):
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry["Key"] == key:
                    self.s3.delete_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])
                    deleted += 1
        return deleted

    def iter_objects(self, uri: str, start_after: str | None = None) -> Iterator[StoredObject]:
        """Every object under a location (recursively), with size and modification time;
        with ``start_after``, only those whose key below ``uri`` sorts after it."""
        if self.is_s3:
            bucket, prefix = _split_s3(uri.rstrip("/") + "/")
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if start_after:
                kwargs["StartAfter"] = prefix + start_after
            for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    yield StoredObject(
                        f"s3://{bucket}/{obj['Key']}",
                        obj["Size"],
                        obj["LastModified"],
                        obj["ETag"].strip('"'),
                    )
            return
        base = Path(uri)
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not (
                start_after and path.relative_to(base).as_posix() <= start_after
            ):
                stat = path.stat()
                yield StoredObject(
                    str(path),
                    stat.st_size,
                    datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                    None,
                )

    def _delete_under(self, uri: str) -> int:
        objects = [obj.uri for obj in self.iter_objects(uri)]
        if self.is_s3:
            bucket, _ = _split_s3(uri)
            for start in range(0, len(objects), 1000):  # S3's limit per request
                chunk = objects[start : start + 1000]
                response = self.s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": _split_s3(o)[1]} for o in chunk]}
                )
                # A batch delete answers 200 even when keys were refused (AccessDenied, object
                # lock): each refusal is only in the body, and must not pass for a deletion.
                if errors := response.get("Errors"):
                    first = errors[0]
                    raise PermissionError(
                        f"{len(errors)} of {len(chunk)} objects under {uri}/ not deleted: "
                        f"{first['Key']}: {first['Code']} ({first.get('Message', '')})"
                    )
        elif Path(uri).exists():
            shutil.rmtree(uri)
        return len(objects)


@lru_cache(maxsize=16)
def _caller_identity(endpoint: str | None, region: str | None, credentials: Any) -> str:
    """The ARN STS reports for these credentials, or their access key where no STS answers."""
    import boto3
    from botocore.config import Config

    try:
        sts = boto3.client(
            "sts",
            # an S3-compatible endpoint (moto, MinIO) serves STS at the same address
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
            config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2}),
        )
        return str(sts.get_caller_identity()["Arn"])
    except Exception:  # no STS there: the access key still names the credentials
        return f"aws-access-key:{credentials.access_key}"


class _BodyReader(io.RawIOBase):
    """boto3's streaming body as a raw stream, so it can be buffered and handed to readers
    (Arrow's CSV reader, gzip) that expect a file object."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _RangedObject(io.RawIOBase):
    """An S3 object as a seekable raw stream of ranged GETs. Opening it fetches the last
    ``TAIL_BYTES`` (where Parquet keeps its footer) and learns the size and ETag; every
    later read asks for exactly its range of that ETag."""

    TAIL_BYTES = 1 << 16

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._pos = 0
        try:
            got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{self.TAIL_BYTES}")
        except Exception as exc:
            if s3_error_code(exc) != "InvalidRange":
                raise
            self._size, self._etag, self._tail = 0, None, b""  # an empty object
            return
        with closing(got["Body"]) as body:
            self._tail = body.read()
        content_range = got.get("ContentRange")  # "bytes 100-199/200", or none for it all
        self._size = int(content_range.rsplit("/", 1)[1]) if content_range else len(self._tail)
        self._etag = got.get("ETag")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fills ``buffer`` up to the end of the object (never a short read before it)."""
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        tail_start = self._size - len(self._tail)
        end = self._pos + n
        filled = 0
        if self._pos < tail_start and n:
            fetched = min(end, tail_start)
            got = self._s3.get_object(
                Bucket=self._bucket,
                Key=self._key,
                Range=f"bytes={self._pos}-{fetched - 1}",
                **({"IfMatch": self._etag} if self._etag else {}),
            )
            with closing(got["Body"]) as body:
                while filled < fetched - self._pos:
                    chunk = body.read(fetched - self._pos - filled)
                    if not chunk:
                        raise ConnectionError(
                            f"s3://{self._bucket}/{self._key}: the body ended early"
                        )
                    view[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
        if filled < n:  # the rest is in the tail fetched at open
            start = self._pos + filled - tail_start
            view[filled:n] = self._tail[start : start + n - filled]
        self._pos = end
        return n


class _DigestCache:
    """SHA-256 of local landed files, remembered by (size, mtime in ns, inode) in a file of
    the work folder: a listing hashes only files that are new or changed, so a build with
    nothing new does not read every file ever landed. Losing the file costs one re-hash;
    processes that save at once each write a complete file (the last one wins)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[Any]] | None = None
        self._changed = False

    def _load(self) -> dict[str, list[Any]]:
        if self._entries is None:
            try:
                loaded = json.loads(self.path.read_text())
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entries = self._load()
        known = entries.get(str(file))
        if isinstance(known, list) and known[:3] == signature:
            return str(known[3])
        digest = _sha256_file(file)
        entries[str(file)] = [*signature, digest]
        self._changed = True
        return digest

    def save(self, under: str, listed: set[str] | None) -> None:
        """Write what changed; files under ``under`` missing from a whole listing
        (``listed``) are gone (deleted, or erased) and are forgotten."""
        if self._entries is None:
            return
        prefix = under.rstrip("/") + "/"
        gone = [
            k
            for k in self._entries
            if listed is not None and k.startswith(prefix) and k not in listed
        ]
        for key in gone:
            del self._entries[key]
        if not (self._changed or gone):
            return
        text = json.dumps(self._entries)
        if save_cache_file(self.path, lambda fh: fh.write(text.encode())):
            self._changed = False


def save_cache_file(path: Path, write: Callable[[BinaryIO], object]) -> bool:
    """Write a work-folder cache file whole or not at all: ``write`` fills a temporary file
    beside it, which then replaces it (processes that save at once each leave a complete
    file; the last one wins). A cache only saves work, so a read-only or full work folder
    is logged, not raised: the next run computes it again. Returns whether it was saved."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        with partial.open("wb") as fh:
            write(fh)
        partial.replace(path)
        return True
    except OSError as exc:
        log.debug("cannot save %s: %s", path, exc)
        return False


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _duration(seconds: float) -> str:
    """A duration as object_store parses it (whole milliseconds)."""
    return f"{round(seconds * 1000)}ms"


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``AccessDenied``...);
    None for anything else (a timeout, a refused connection, a local error)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None
