#!/usr/bin/env python3
"""S3 Object Lock helpers for kho's tests, run against the loopback moto server.

  s3-object-lock.py bucket --port P --key-id ID --secret S --bucket B [--lock]
      Creates bucket B, with object lock enabled (and so versioning) when --lock is given.

  s3-object-lock.py age --port P --key-id ID --secret S --bucket B --prefix PREFIX [--only SUBSTRING]
      Plays the passing of time: sets the retain-until date of every object version under PREFIX
      (whose key contains SUBSTRING) to a minute ago, as if its lock period had ended.
      (Real S3 refuses to shorten a compliance lock; moto allows it, which is what makes this test
      possible without waiting for days.) Prints how many versions it changed.

  s3-object-lock.py attack --port P --key-id ID --secret S --bucket B --prefix PREFIX
      Plays ransomware holding the backup host's key: tries to delete every version of every
      object under PREFIX. Prints JSON {"versions": N, "deleted": [KEY...], "refused": M}.
"""
import argparse
import datetime
import json
import sys

import boto3
from botocore.exceptions import ClientError


def client(args):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{args.port}", region_name="us-east-1",
                        aws_access_key_id=args.key_id, aws_secret_access_key=args.secret)


def versions(s3, bucket, prefix):
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            found.append((version["Key"], version["VersionId"]))
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["bucket", "age", "attack"])
    for name in ["--port", "--key-id", "--secret", "--bucket"]:
        parser.add_argument(name, required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--only", default="")
    parser.add_argument("--lock", action="store_true")
    args = parser.parse_args()
    s3 = client(args)
    if args.command == "bucket":
        s3.create_bucket(Bucket=args.bucket, ObjectLockEnabledForBucket=args.lock)
    elif args.command == "age":
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
        changed = 0
        for key, version in versions(s3, args.bucket, args.prefix):
            if args.only not in key:
                continue
            head = s3.head_object(Bucket=args.bucket, Key=key, VersionId=version)
            mode = head.get("ObjectLockMode")
            if not mode:
                continue
            s3.put_object_retention(Bucket=args.bucket, Key=key, VersionId=version,
                                    Retention={"Mode": mode, "RetainUntilDate": past})
            changed += 1
        print(changed)
    else:
        deleted, refused = [], 0
        found = versions(s3, args.bucket, args.prefix)
        for key, version in found:
            try:
                s3.delete_object(Bucket=args.bucket, Key=key, VersionId=version)
                deleted.append(key)
            except ClientError as error:
                if error.response["Error"]["Code"] != "AccessDenied":
                    raise
                refused += 1
        print(json.dumps({"versions": len(found), "deleted": deleted, "refused": refused}))


if __name__ == "__main__":
    sys.exit(main())
