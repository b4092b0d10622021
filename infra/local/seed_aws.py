"""Creates the "production" resources catalyst-dr works on, in the local AWS endpoint.

What the SAM template and the user's account provide in AWS: the backup bucket (versioned,
Object Lock on), the Catalyst Auth RDS instance and ElastiCache replication group, and the alert
topic, here with an SQS queue subscribed so that tests can read the notifications. Idempotent.
Prints the resource names and the functions' configuration as JSON.
"""

import json
import os

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_REGION", "us-east-1")

BUCKET = "catalyst-dr-local-backups"
RDS_INSTANCE = "catalyst-auth-prod"
CACHE_GROUP = "catalyst-auth-cache"
TOPIC = "catalyst-dr-alerts"
SOURCE_DB_SECRET = "catalyst-dr/local/source-database"
# The database dead-letter-replay writes to locally: the replay state machine test creates it and
# stores its secret, so that it never races the tests that use catalyst_auth.
REPLAY_DB_SECRET = "catalyst-dr/local/replay-database"
INBOX = "catalyst-dr-alerts-inbox"


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=REGION)


def main():
    s3 = client("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )

    rds = client("rds")
    if not any(i["DBInstanceIdentifier"] == RDS_INSTANCE for i in rds.describe_db_instances()["DBInstances"]):
        rds.create_db_instance(
            DBInstanceIdentifier=RDS_INSTANCE,
            DBInstanceClass="db.t4g.medium",
            Engine="postgres",
            EngineVersion="15.8",
            MasterUsername="catalyst",
            MasterUserPassword="local-only-password",
            AllocatedStorage=20,
            BackupRetentionPeriod=7,
        )

    cache = client("elasticache")
    groups = [g["ReplicationGroupId"] for g in cache.describe_replication_groups()["ReplicationGroups"]]
    if CACHE_GROUP not in groups:
        cache.create_replication_group(
            ReplicationGroupId=CACHE_GROUP,
            ReplicationGroupDescription="Catalyst Auth queue and cache",
            Engine="redis",
            CacheNodeType="cache.t4g.small",
            NumCacheClusters=1,
        )

    sns = client("sns")
    sqs = client("sqs")
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    inbox_url = sqs.create_queue(QueueName=INBOX)["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscribed = [s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]]
    if inbox_arn not in subscribed:
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})

    # The production database's credentials, as RDS keeps them in Secrets Manager.
    secrets = client("secretsmanager")
    document = json.dumps(
        {
            "engine": "postgres",
            "host": os.environ["CATALYST_DR_PG_HOST"],
            "port": int(os.environ["CATALYST_DR_PG_PORT"]),
            "username": "postgres",
            "password": os.environ["CATALYST_DR_PG_PASSWORD"],
            "dbname": "catalyst_auth",
        }
    )
    try:
        secrets.create_secret(Name=SOURCE_DB_SECRET, SecretString=document)
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=SOURCE_DB_SECRET, SecretString=document)

    print(
        json.dumps(
            {
                "bucket": BUCKET,
                "rds_instance": RDS_INSTANCE,
                "cache_replication_group": CACHE_GROUP,
                "alert_topic_arn": topic_arn,
                "alert_inbox_url": inbox_url,
                "source_database_secret": SOURCE_DB_SECRET,
                "function_env": {
                    "BACKUP_BUCKET": BUCKET,
                    "RDS_INSTANCE_ID": RDS_INSTANCE,
                    "ELASTICACHE_REPLICATION_GROUP_ID": CACHE_GROUP,
                    # The local endpoint cannot serve ElastiCache CopySnapshot; the export's
                    # request is covered by a request-shape test instead.
                    "ELASTICACHE_EXPORT": "false",
                    "RETENTION_DAYS": "1",
                    "KEEP_NEWEST": "3",
                    "SCHEDULE_NAME": "nightly-backup-local",
                    "SOURCE_DATABASE_SECRET_ID": SOURCE_DB_SECRET,
                    # Loopback only: the local PostgreSQL has no TLS.
                    "PG_TLS": "disable",
                    # dead-letter-replay: endpoints on loopback are allowed locally only.
                    "REPLAY_DATABASE_SECRET_ID": REPLAY_DB_SECRET,
                    "PROBE_ALLOW_CIDRS": "127.0.0.0/8,::1/128",
                    "PROBE_TIMEOUT_MS": "2000",
                    "REPLAY_BATCH_SIZE": "500",
                    "AUDIT_RETENTION_DAYS": "1",
                    "STAGING_REDIS_URL": os.environ["CATALYST_DR_REDIS_URL"],
                    "REDIS_QUEUE_PATTERNS": "catalyst:webhooks:queue:*,catalyst:webhooks:delayed",
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
