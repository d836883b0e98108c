"""Local paths and S3-compatible URIs behind one pyarrow filesystem.

Credentials come from the standard AWS chain (environment, profile, instance
role) inside pyarrow and boto3; this module never reads, logs or stores them.
pyarrow ignores ``AWS_ENDPOINT_URL``, so the endpoint is passed explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

import pyarrow.fs as pafs


@dataclass(frozen=True)
class Location:
    """A resolved place: the filesystem and the path inside it (no scheme)."""

    fs: pafs.FileSystem
    path: str
    uri: str
    # S3 only: what a boto3 client needs for the calls pyarrow cannot make.
    s3_endpoint: Optional[str] = None
    s3_region: str = "us-east-1"

    def join(self, *parts: str) -> "Location":
        sep = "/"
        path = sep.join([self.path.rstrip(sep), *[p.strip(sep) for p in parts]])
        uri = sep.join([self.uri.rstrip(sep), *[p.strip(sep) for p in parts]])
        return Location(self.fs, path, uri, self.s3_endpoint, self.s3_region)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


def s3_filesystem(endpoint: Optional[str] = None, region: str = "us-east-1") -> pafs.S3FileSystem:
    kwargs: dict = {"region": region}
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, s3_endpoint: Optional[str] = None, s3_region: str = "us-east-1") -> Location:
    if uri.startswith("s3://"):
        return Location(s3_filesystem(s3_endpoint, s3_region), uri[len("s3://"):].rstrip("/"), uri.rstrip("/"),
                        s3_endpoint, s3_region)
    if "://" in uri:
        raise ValueError(f"{uri!r}: only local paths and s3:// URIs are supported")
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(pafs.LocalFileSystem(), path, path)


def s3_client(loc: Location):
    """A boto3 client for ``loc``'s endpoint; credentials from the AWS chain."""
    import boto3

    endpoint = loc.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=loc.s3_region)


def delete_dir_if_exists(loc: Location) -> None:
    if loc.is_s3:
        # pyarrow's delete_dir leaves a "parent/" marker object behind (it
        # keeps the parent "directory" alive); delete the keys directly.
        bucket, _, prefix = loc.path.partition("/")
        client = s3_client(loc)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
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


def make_dirs(fs: pafs.FileSystem, path: str) -> None:
    """Create a local folder; on object stores do nothing (pyarrow would leave
    empty ``prefix/`` marker objects that confuse some readers)."""
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path, recursive=True)
