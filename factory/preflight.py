"""Every place a job reads or writes, checked before Ray or an engine starts.

An endpoint where nothing answers, a bucket that does not exist, credentials
that are missing or refused, no right to write, an output that is a file:
each becomes one UsageError (exit 2) naming the flag and what would be right,
instead of a traceback after the night's first hour. The checks are a few
cheap requests per store (a one-key listing; for an output, one small object
written and deleted again), made with a client that does not retry for long:
a store that is down at start-up is a setting to fix, not a fault to wait out.
Faults later in the run keep the full retry budget (``factory.storage``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Optional

from factory.errors import StorageError, UsageError
from factory.storage import TRANSIENT_CODES, Location, S3Options, encryption, resolve

# The probe object an output check writes and deletes (a name no reader lists: leading "_").
PROBE_PREFIX = "_write_check-"
_FIX = {
    "NoSuchBucket": "create the bucket, or fix its name",
    "AccessDenied": "use credentials that are allowed to {action} there",
    "AllAccessDisabled": "use credentials that are allowed to {action} there",
    "InvalidAccessKeyId": "the store does not know this access key: check AWS_ACCESS_KEY_ID or AWS_PROFILE",
    "SignatureDoesNotMatch": "the store refused the secret key: check AWS_SECRET_ACCESS_KEY",
    "InvalidToken": "the session token is not valid: refresh the credentials",
    "ExpiredToken": "the session token has expired: refresh the credentials",
    "TokenRefreshRequired": "the session token has expired: refresh the credentials",
    "PermanentRedirect": "the bucket is in another region: set --s3-region",
    "AuthorizationHeaderMalformed": "the bucket is in another region: set --s3-region",
}
_SAYS = {
    "NoSuchBucket": "bucket {bucket!r} does not exist",
    "AccessDenied": "access denied ({action})",
    "AllAccessDisabled": "access denied ({action})",
}


def check_place(uri: Optional[str], flag: str, storage: dict[str, Any], *, write: bool = False) -> None:
    """``uri`` (local or s3://), named on the command line by ``flag``, can be
    read (and with ``write`` written). Local inputs are left to the readers,
    whose errors name the file, the column and the row."""
    if not uri:
        return
    loc = resolve(uri, **storage)
    if loc.is_s3:
        check_s3(loc, flag, write=write)
    elif write:
        check_local_folder(loc, flag)


def check_local_folder(loc: Location, flag: str) -> None:
    """A local folder the job will write: not a file, and makeable or writable."""
    path = Path(loc.path)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"{flag} {loc.uri}: this is a file, not a folder",
            "give a folder (it is created if missing) or s3://bucket/prefix",
        )
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"{flag} {loc.uri}: {parent} is a file, so the folder cannot be made there",
            "give a folder path whose parents are folders",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {loc.uri}: no permission to write in {parent}",
            "give a folder this user may write, or s3://bucket/prefix",
        )


def _quick_client(options: S3Options):
    # Not cached: a check runs a few times per job, and must see the credentials as they are now.
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    # A session of its own: boto3's default one keeps the credentials it found first.
    return boto3.session.Session().client(
        "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config
    )


def _endpoint(loc: Location) -> str:
    return (loc.s3 or S3Options()).endpoint_url or "AWS S3"


def check_s3(loc: Location, flag: str, *, write: bool = False) -> None:
    """One listing of the prefix (endpoint, credentials, bucket, read right);
    with ``write`` a probe object put and deleted under it."""
    import boto3
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    options = loc.s3 or S3Options()
    if boto3.session.Session(region_name=options.region).get_credentials() is None:
        raise UsageError(
            f"{flag} {loc.uri}: no S3 credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an "
            "instance role provides them",
        )
    bucket, _, key = loc.path.partition("/")
    client = _quick_client(options)
    action = "s3:ListBucket"
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        if write:
            action = "s3:PutObject"
            probe = f"{key.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex}".lstrip("/")
            client.put_object(Bucket=bucket, Key=probe, Body=b"", **encryption(loc))
            action = "s3:DeleteObject"  # the job deletes its own work files as it goes
            client.delete_object(Bucket=bucket, Key=probe)
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise UsageError(
            f"{flag} {loc.uri}: nothing answers at the S3 endpoint {_endpoint(loc)} ({_reason(exc)})",
            "check --s3-endpoint and that the store is up",
        ) from None
    except NoCredentialsError:
        raise UsageError(
            f"{flag} {loc.uri}: no S3 credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        code = {"403": "AccessDenied", "404": "NoSuchBucket"}.get(code, code)
        if code in TRANSIENT_CODES:  # busy or down now: a storage failure worth a retry, not a mistake
            raise StorageError(loc.uri, f"{code}: {error.get('Message') or exc}", code=code) from None
        says = _SAYS.get(code, "the store answered {code}").format(bucket=bucket, action=action, code=code)
        fix = _FIX.get(code, "{message}").format(
            action=action, message=error.get("Message") or "see the store's docs"
        )
        raise UsageError(f"{flag} {loc.uri}: {says} (endpoint {_endpoint(loc)})", fix) from None
    except BotoCoreError as exc:
        raise UsageError(
            f"{flag} {loc.uri}: cannot use the S3 endpoint {_endpoint(loc)}: {exc}",
            "check --s3-endpoint and --s3-region",
        ) from None


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "kwargs", {}).get("error", "") or exc)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if known.lower() in text.lower():
            return known.lower()
    return "cannot connect"


def check_engine_kwargs(kwargs: dict[str, Any], flag: str = "--engine-kwargs") -> None:
    """Every key is one of vLLM's engine arguments: a typo found here, not when the engine starts."""
    if not kwargs:
        return  # importing vLLM on the driver takes seconds: only when there is something to check
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    from factory.errors import nearest

    known = [f.name for f in dataclasses.fields(AsyncEngineArgs)]
    for key in kwargs:
        if key not in known:
            hint = nearest(key, known)
            raise UsageError(
                f"{flag}: vLLM has no engine argument {key!r}"
                + (f" (did you mean {hint!r}?)" if hint else ""),
                "see vLLM's engine arguments for the release in use",
            )
