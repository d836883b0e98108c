"""Local paths and S3-compatible URIs behind one small interface.

Reads go through pyarrow filesystems (Ray Data reads with them too). Writes
of the factory's own output go through ``put_bytes``: on S3 that is one boto3
PUT, so an object is either whole or absent (what resume relies on), it can
be conditional (``If-None-Match: *``, so two writers never both publish a
manifest) and server-side encrypted (pyarrow can do neither). Locally the
same guarantees come from a temporary file and a rename or a hard link.

Credentials come from the standard AWS chain (environment, profile, instance
role) inside pyarrow and boto3; this module never reads, logs or stores them.
Both clients retry throttling, 5xx answers and dropped connections with
backoff (AWS "standard" mode) up to ``max_attempts`` before an error surfaces.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from factory.errors import StorageError, UsageError

DEFAULT_MAX_ATTEMPTS = 10
logger = logging.getLogger(__name__)

# Errors pyarrow's S3 client surfaces for faults worth another try (the same
# markers Ray Data retries its own reads on), and their local equivalents.
TRANSIENT_MARKERS = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error SERVICE_UNAVAILABLE",
    "AWS Error UNKNOWN (HTTP status 503)",
    "AWS Error UNKNOWN (HTTP status 500)",
    "Connection reset",
    "timed out",
)


# A store's codes for the same: it is busy or broken now, not refusing this request.
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "500", "503"}
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a store's answer worth another try later (throttled,
    5xx, a dropped connection), as opposed to one that names a mistake (no
    such bucket, access denied, not Parquet)."""
    if isinstance(exc, FileNotFoundError):
        return False
    response = getattr(exc, "response", None)  # botocore's ClientError: a dict
    code = getattr(exc, "code", "") or (
        response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    )
    return code in TRANSIENT_CODES or any(m in str(exc) for m in TRANSIENT_MARKERS)


class AlreadyExists(FileExistsError):
    """An exclusive write found the object already there."""


@dataclass(frozen=True)
class S3Options:
    endpoint: Optional[str] = None
    region: str = "us-east-1"
    sse: Optional[str] = None  # "AES256" or "aws:kms" for objects the factory writes
    sse_kms_key_id: Optional[str] = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @property
    def endpoint_url(self) -> Optional[str]:
        endpoint = (
            self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint and "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        return endpoint or None


@dataclass(frozen=True)
class Location:
    """A resolved place: the filesystem and the path inside it (no scheme)."""

    fs: pafs.FileSystem
    path: str
    uri: str
    s3: Optional[S3Options] = field(default=None)

    def join(self, *parts: str) -> Location:
        sep = "/"
        path = sep.join([self.path.rstrip(sep), *[p.strip(sep) for p in parts]])
        uri = sep.join([self.uri.rstrip(sep), *[p.strip(sep) for p in parts]])
        return Location(self.fs, path, uri, self.s3)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    kwargs: dict = {"region": options.region}
    endpoint = options.endpoint_url
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    return _S3FileSystem(options, **kwargs)


class _S3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem, retrying ``options.max_attempts`` times in
    every process it is sent to.

    pyarrow (checked against 26.0.1; apache/arrow GH-47348) pickles an
    S3FileSystem without its retry strategy: in a Ray worker it retried 3
    times, whatever ``--s3-max-attempts`` said. Pickled as its options, it
    is built again whole."""

    def __init__(self, options: S3Options, **kwargs):
        retries = pafs.AwsStandardS3RetryStrategy(max_attempts=options.max_attempts)
        super().__init__(retry_strategy=retries, **kwargs)
        self.options = options

    def __reduce__(self):
        return s3_filesystem, (self.options,)


def resolve(
    uri: str,
    s3_endpoint: Optional[str] = None,
    s3_region: str = "us-east-1",
    *,
    s3_sse: Optional[str] = None,
    s3_sse_kms_key_id: Optional[str] = None,
    s3_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Location:
    if uri.startswith("s3://"):
        options = S3Options(s3_endpoint, s3_region, s3_sse, s3_sse_kms_key_id, s3_max_attempts)
        return Location(s3_filesystem(options), uri[len("s3://") :].rstrip("/"), uri.rstrip("/"), options)
    if "://" in uri:
        raise UsageError(f"{uri}: only local paths and s3:// URIs are supported")
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(pafs.LocalFileSystem(), path, path)


@functools.lru_cache(maxsize=8)
def _client(options: S3Options):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config)


def s3_client(loc: Location):
    """A boto3 client for ``loc``'s endpoint (cached per process)."""
    return _client(loc.s3 or S3Options())


def _bucket_key(loc: Location) -> tuple[str, str]:
    bucket, _, key = loc.path.partition("/")
    return bucket, key


@contextlib.contextmanager
def _boto_naming(loc: Location):
    """A boto3 call on ``loc`` whose failure (after the client's retries) is
    raised as a StorageError naming ``loc``, with the store's code kept."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        raise StorageError(loc.uri, f"{code}: {error.get('Message') or exc}", code=code) from exc
    except BotoCoreError as exc:  # the connection itself
        raise StorageError(loc.uri, str(exc)) from exc


def encryption(loc: Location) -> dict[str, str]:
    """The server-side encryption arguments of every object written to ``loc``."""
    options = loc.s3 or S3Options()
    if not options.sse:
        return {}
    return {
        "ServerSideEncryption": options.sse,
        **({"SSEKMSKeyId": options.sse_kms_key_id} if options.sse_kms_key_id else {}),
    }


def put_bytes(
    loc: Location, data: bytes, *, exclusive: bool = False, content_type: Optional[str] = None
) -> int:
    """Write ``data`` whole to ``loc`` (never a partial object or file).

    ``exclusive`` fails with AlreadyExists if something is there already."""
    if loc.is_s3:
        bucket, key = _bucket_key(loc)
        kwargs = {"Bucket": bucket, "Key": key, "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        if exclusive:
            kwargs["IfNoneMatch"] = "*"
        kwargs.update(encryption(loc))
        try:
            with _boto_naming(loc):
                s3_client(loc).put_object(**kwargs)
        except StorageError as exc:
            if exclusive and exc.code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise AlreadyExists(loc.uri) from None
            raise
        return len(data)
    folder = os.path.dirname(loc.path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(loc.path)}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        if exclusive:
            try:
                os.link(tmp, loc.path)  # atomic, and fails if the name exists
            except FileExistsError:
                raise AlreadyExists(loc.uri) from None
        else:
            os.replace(tmp, loc.path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(data)


def retry_io(fn, *args, attempts: int = DEFAULT_MAX_ATTEMPTS, **kwargs):
    """``fn(*args, **kwargs)``, tried again with backoff on transient storage errors.

    pyarrow's AWS SDK retries a failed request, but not a connection that drops
    while a body is read ("Failed to flush response stream"), so reads made
    on the driver go through here as well."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            message = str(exc)
            # A StorageError has had its retries already.
            if attempt == attempts or isinstance(exc, StorageError) or not is_transient(exc):
                raise
            logger.warning(
                "Transient storage error, try %d of %d in %.1f s: %s",
                attempt + 1,
                attempts,
                delay,
                message.splitlines()[0][:200],
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def outer_attempts(loc: Location) -> int:
    """Tries of a whole read on ``loc``, ours or Ray Data's. pyarrow already
    retries each request up to max_attempts; these outer tries are for a body
    cut off mid-read, so a few are enough (more would multiply the wait in a
    real outage: seen 8 x 50 s)."""
    return min(3, loc.s3.max_attempts) if loc.s3 else 1


def read_bytes(loc: Location) -> bytes:
    """The whole object or file; FileNotFoundError if it is not there,
    StorageError (naming it) if the store keeps failing."""

    def read() -> bytes:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()

    return _naming(loc, retry_io, read, attempts=outer_attempts(loc))


def _naming(loc: Location, fn, *args, **kwargs):
    """``fn(...)``, with a store's failure on ``loc`` raised as a StorageError that names it."""
    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, StorageError):
        raise
    except OSError as exc:
        if not loc.is_s3:
            raise
        raise named_failure(loc.uri, exc) from exc


def named_failure(uri: str, exc: BaseException) -> StorageError:
    """``exc``, a store's failure on ``uri``, as the StorageError that names it (its text on one line)."""
    return StorageError(uri, " ".join(str(exc).split())[:400])


def read_parquet_part(
    fs: pafs.FileSystem,
    path: str,
    group: Optional[int] = None,
    columns: Optional[Sequence[str]] = None,
    *,
    present_only: bool = False,
) -> pa.Table:
    """Row group ``group`` of the Parquet file at ``path`` on ``fs`` (the
    whole file when None), as the Ray tasks that read inputs take it: with
    retries, and a store's failure named (pyarrow's own words for a read
    leave the object out). ``present_only`` reads those of ``columns`` the
    file has, leaving the others to the caller."""
    # Ours carries its options (the job's tries); a bare pyarrow one gets the defaults.
    options = getattr(fs, "options", S3Options()) if isinstance(fs, pafs.S3FileSystem) else None
    loc = Location(fs, path, f"s3://{path}" if options else path, options)

    def read() -> pa.Table:
        f = pq.ParquetFile(path, filesystem=fs)
        wanted = [c for c in columns if c in f.schema_arrow.names] if present_only and columns else columns
        return f.read(columns=wanted) if group is None else f.read_row_group(group, columns=wanted)

    return _naming(loc, retry_io, read, attempts=outer_attempts(loc))


def read_metadata(loc: Location) -> pq.FileMetaData:
    """A Parquet file's footer (rows, row groups, key-value metadata), with
    retries; a store's failure names the file (pyarrow's words for the
    footer's ranged GET leave it out)."""
    return _naming(loc, retry_io, pq.read_metadata, loc.path, filesystem=loc.fs, attempts=outer_attempts(loc))


def read_parquet(loc: Location, columns=None, filters=None) -> pa.Table:
    """One Parquet file, read whole (with retries) and parsed in memory."""
    return pq.read_table(pa.BufferReader(read_bytes(loc)), columns=columns, filters=filters)


def write_parquet(loc: Location, table: pa.Table) -> int:
    """``table`` as one whole Parquet object; returns its size in bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return put_bytes(loc, sink.getvalue().to_pybytes())


def list_files(loc: Location, suffix: str = "") -> list[pafs.FileInfo]:
    """Files under ``loc`` (recursively), sorted by path; none if it does not exist."""
    infos = _naming(
        loc,
        retry_io,
        loc.fs.get_file_info,
        pafs.FileSelector(loc.path, recursive=True, allow_not_found=True),
        attempts=outer_attempts(loc),
    )
    return sorted(
        (
            i
            for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(suffix) and not i.base_name.startswith(".")
        ),
        key=lambda i: i.path,
    )


def delete_dir_if_exists(loc: Location) -> None:
    if loc.is_s3:
        # pyarrow's delete_dir leaves a "parent/" marker object behind (it
        # keeps the parent "directory" alive); delete the keys directly.
        bucket, prefix = _bucket_key(loc)
        client = s3_client(loc)
        with _boto_naming(loc):
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
            )
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        return
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)
    elif info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def delete_file(loc: Location) -> None:
    """Delete one object or file; nothing happens if it is not there."""
    if loc.is_s3:
        # boto3, not pyarrow: pyarrow's delete_file leaves a marker object
        # for the emptied "directory" (as delete_dir does, above).
        bucket, key = _bucket_key(loc)
        with _boto_naming(loc):
            s3_client(loc).delete_object(Bucket=bucket, Key=key)
        return
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)
