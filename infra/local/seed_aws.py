"""Creates the "production" resources catalyst-dr works on, in the local AWS endpoint.

What the SAM template and the user's account provide in AWS: the backup bucket (versioned,
Object Lock on), the Catalyst Auth RDS instance and ElastiCache replication group, the staging
network (database and cache subnet groups, security groups), the secrets, and the alert topic,
here with an SQS queue subscribed so that tests can read the notifications, and the account's
administrator user. Idempotent.
Prints the resource names as JSON (STATE/seed.json); the functions' configuration is derived from
the template by deployed.py.
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
STAGING_DB_SECRET = "catalyst-dr/local/staging-database"
STAGING_SUBNET_GROUP = "catalyst-dr-staging-subnets"
STAGING_SG = "catalyst-dr-staging"
DATABASE_SG = "catalyst-auth-database"
CACHE_SG = "catalyst-auth-cache"
# Where the quarterly drill restores the cache (StagingCacheSubnetGroupName,
# StagingCacheSecurityGroupId), the secret it writes the staging cache's URL to (as the template's
# StagingCacheSecret) and the production cache's URL secret (SourceCacheSecretArn).
STAGING_CACHE_SUBNET_GROUP = "catalyst-dr-staging-cache"
STAGING_CACHE_SG = "catalyst-dr-staging-cache"
STAGING_CACHE_SECRET = "catalyst-dr/local/staging-cache"
SOURCE_CACHE_SECRET = "catalyst-dr/local/source-cache"
# The database dead-letter-replay writes to locally: the replay state machine test creates it and
# stores its secret, so that it never races the tests that use catalyst_auth.
REPLAY_DB_SECRET = "catalyst-dr/local/replay-database"
BACKUP_DB_SECRET = "catalyst-dr/local/backup-database"
DRILL_DB_SECRET = "catalyst-dr/local/drill-database"
INBOX = "catalyst-dr-alerts-inbox"
ADMIN_USER = "catalyst-dr-local-admin"
WEBHOOK_QUEUE = "catalyst-auth-webhooks"
WEBHOOK_DLQ = "catalyst-auth-webhooks-dlq"
STAGING_QUEUE = "catalyst-auth-staging-webhooks"
# The DR region: a second region on the same endpoint, with its own key and Object Lock bucket.
# The DR account is only a share target (moto records the restore attribute).
DR_REGION = "us-west-2"
DR_BUCKET = "catalyst-dr-local-dr-copies"
DR_KEY_ALIAS = "alias/catalyst-dr-local-dr"
DR_ACCOUNT_ID = "210987654321"


def client(service, region=REGION):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=region)


def dr_resources():
    """The DR region's customer key (RDS encrypts the snapshot copies with it) and the DR
    bucket, versioned with Object Lock on like the backup bucket."""
    kms = client("kms", DR_REGION)
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    if DR_KEY_ALIAS in aliases:
        key_id = aliases[DR_KEY_ALIAS]
    else:
        key_id = kms.create_key(Description="catalyst-dr DR copies")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=DR_KEY_ALIAS, TargetKeyId=key_id)
    key_arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    s3 = client("s3", DR_REGION)
    if DR_BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(
            Bucket=DR_BUCKET,
            ObjectLockEnabledForBucket=True,
            CreateBucketConfiguration={"LocationConstraint": DR_REGION},
        )
        s3.put_object_lock_configuration(
            Bucket=DR_BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
    return {"dr_region": DR_REGION, "dr_bucket": DR_BUCKET, "dr_kms_key_arn": key_arn, "dr_account_id": DR_ACCOUNT_ID}


def main():
    dr = dr_resources()
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

    # The staging network: a subnet group and security group that production traffic cannot
    # reach, where pitr-restore lands its restores.
    ec2 = client("ec2")
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["catalyst-dr-staging"]}])["Vpcs"]
    if vpcs:
        vpc_id = vpcs[0]["VpcId"]
    else:
        vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": "catalyst-dr-staging"}])
        for i, zone in enumerate(["a", "b"]):
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [STAGING_SG]}])["SecurityGroups"]
    staging_sg = groups[0]["GroupId"] if groups else ec2.create_security_group(
        GroupName=STAGING_SG, Description="catalyst-dr staging databases", VpcId=vpc_id
    )["GroupId"]
    # The source database's security group (DatabaseSecurityGroupId); the template gives each
    # function a security group of its own.
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [DATABASE_SG]}])["SecurityGroups"]
    database_sg = groups[0]["GroupId"] if groups else ec2.create_security_group(
        GroupName=DATABASE_SG, Description="Catalyst Auth database", VpcId=vpc_id
    )["GroupId"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [CACHE_SG]}])["SecurityGroups"]
    cache_sg = groups[0]["GroupId"] if groups else ec2.create_security_group(
        GroupName=CACHE_SG, Description="Catalyst Auth cache", VpcId=vpc_id
    )["GroupId"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [STAGING_CACHE_SG]}])["SecurityGroups"]
    staging_cache_sg = groups[0]["GroupId"] if groups else ec2.create_security_group(
        GroupName=STAGING_CACHE_SG, Description="catalyst-dr staging caches", VpcId=vpc_id
    )["GroupId"]
    route_table_ids = sorted(
        t["RouteTableId"] for t in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    )
    subnet_ids = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"])
    if not any(g["DBSubnetGroupName"] == STAGING_SUBNET_GROUP for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]):
        subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]]
        rds.create_db_subnet_group(
            DBSubnetGroupName=STAGING_SUBNET_GROUP, DBSubnetGroupDescription="catalyst-dr staging", SubnetIds=subnets
        )

    cache = client("elasticache")
    # The drill's staging caches land in the staging network, as staging restores do.
    if not any(
        g["CacheSubnetGroupName"] == STAGING_CACHE_SUBNET_GROUP
        for g in cache.describe_cache_subnet_groups()["CacheSubnetGroups"]
    ):
        cache.create_cache_subnet_group(
            CacheSubnetGroupName=STAGING_CACHE_SUBNET_GROUP,
            CacheSubnetGroupDescription="catalyst-dr staging caches",
            SubnetIds=subnet_ids,
        )
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

    # Catalyst Auth's webhook queue with its dead-letter queue, and the staging environment's
    # queue (tagged as catalyst-dr's staging copy) holding stale deliveries a drill must flush.
    dlq_url = sqs.create_queue(QueueName=WEBHOOK_DLQ, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=WEBHOOK_QUEUE,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    staging_queue_url = sqs.create_queue(QueueName=STAGING_QUEUE, tags={"catalyst-dr:role": "staging"})["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=staging_queue_url, MessageBody=json.dumps({"delivery_id": 900000 + n, "stale": True}))

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
    source_secret_arn = secrets.describe_secret(SecretId=SOURCE_DB_SECRET)["ARN"]

    # Receives the staging copy's credentials and DATABASE_URL from pitr-restore.
    # Tagged as the template tags StagingDatabaseSecret.
    try:
        secrets.create_secret(
            Name=STAGING_DB_SECRET,
            Description="catalyst-dr staging DATABASE_URL",
            Tags=[
                {"Key": "project", "Value": "catalyst-dr"},
                {"Key": "catalyst-dr:role", "Value": "staging"},
                {"Key": "catalyst-dr:created-by", "Value": "catalyst-dr"},
            ],
        )
    except secrets.exceptions.ResourceExistsException:
        pass
    staging_secret_arn = secrets.describe_secret(SecretId=STAGING_DB_SECRET)["ARN"]

    # Receives the drill's staging cache URL from pitr-restore; tagged as the template tags
    # StagingCacheSecret.
    try:
        secrets.create_secret(
            Name=STAGING_CACHE_SECRET,
            Description="catalyst-dr staging cache URL",
            Tags=[
                {"Key": "project", "Value": "catalyst-dr"},
                {"Key": "catalyst-dr:role", "Value": "staging"},
                {"Key": "catalyst-dr:created-by", "Value": "catalyst-dr"},
            ],
        )
    except secrets.exceptions.ResourceExistsException:
        pass
    staging_cache_secret_arn = secrets.describe_secret(SecretId=STAGING_CACHE_SECRET)["ARN"]

    # The production cache's URL, as an operator stores it with its AUTH token (the local Redis
    # has none).
    try:
        secrets.create_secret(Name=SOURCE_CACHE_SECRET, SecretString=os.environ["CATALYST_DR_REDIS_URL"])
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=SOURCE_CACHE_SECRET, SecretString=os.environ["CATALYST_DR_REDIS_URL"])
    source_cache_secret_arn = secrets.describe_secret(SecretId=SOURCE_CACHE_SECRET)["ARN"]

    # The functions' own database secrets (BackupDatabaseSecretArn, DrillDatabaseSecretArn,
    # ReplayDatabaseSecretArn): the backup and drill roles stack.sh set up on catalyst_auth. The
    # replay's secret is filled by the replay state machine test with its own database's.
    role_secret_arns = {}
    for key, name, user in [
        ("backup", BACKUP_DB_SECRET, "catalyst_dr_backup"),
        ("drill", DRILL_DB_SECRET, "catalyst_dr_drill"),
        ("replay", REPLAY_DB_SECRET, None),
    ]:
        role_document = document
        if user is not None:
            role_document = json.dumps(
                {**json.loads(document), "username": user, "password": os.environ["CATALYST_DR_LOCAL_ROLE_PASSWORD"]}
            )
        try:
            secrets.create_secret(Name=name, SecretString=role_document)
        except secrets.exceptions.ResourceExistsException:
            secrets.put_secret_value(SecretId=name, SecretString=role_document)
        role_secret_arns[key] = secrets.describe_secret(SecretId=name)["ARN"]

    # The account's administrator: the harness and the tests act as it once the endpoint
    # enforces IAM; the functions act under their own roles (functions.py).
    iam = client("iam")
    try:
        iam.create_user(UserName=ADMIN_USER)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    iam.put_user_policy(
        UserName=ADMIN_USER,
        PolicyName="administrator",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    admin_key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]

    print(
        json.dumps(
            {
                "admin_access_key_id": admin_key["AccessKeyId"],
                "admin_secret_access_key": admin_key["SecretAccessKey"],
                "bucket": BUCKET,
                "rds_instance": RDS_INSTANCE,
                "cache_replication_group": CACHE_GROUP,
                "alert_topic_arn": topic_arn,
                "alert_inbox_url": inbox_url,
                "source_database_secret": SOURCE_DB_SECRET,
                # The local engine reads the source cluster as RDS reads its own storage.
                "source_database_url": "postgresql://postgres:{password}@{host}:{port}/catalyst_auth".format(
                    password=os.environ["CATALYST_DR_PG_PASSWORD"],
                    host=os.environ["CATALYST_DR_PG_HOST"],
                    port=os.environ["CATALYST_DR_PG_PORT"],
                ),
                "staging_database_secret": STAGING_DB_SECRET,
                "webhook_queue_url": queue_url,
                "webhook_dlq_url": dlq_url,
                "staging_queue_url": staging_queue_url,
                "staging_subnet_group": STAGING_SUBNET_GROUP,
                "staging_security_group": staging_sg,
                # What infra/local/deployed.py needs to resolve the template for this stack.
                "source_database_secret_arn": source_secret_arn,
                "staging_database_secret_arn": staging_secret_arn,
                "replay_database_secret": REPLAY_DB_SECRET,
                "replay_database_secret_arn": role_secret_arns["replay"],
                "backup_database_secret_arn": role_secret_arns["backup"],
                "drill_database_secret_arn": role_secret_arns["drill"],
                "vpc_id": vpc_id,
                "subnet_ids": ",".join(subnet_ids),
                "route_table_ids": ",".join(route_table_ids),
                "database_security_group": database_sg,
                "cache_security_group": cache_sg,
                "staging_cache_subnet_group": STAGING_CACHE_SUBNET_GROUP,
                "staging_cache_security_group": staging_cache_sg,
                "staging_cache_secret": STAGING_CACHE_SECRET,
                "staging_cache_secret_arn": staging_cache_secret_arn,
                "source_cache_secret": SOURCE_CACHE_SECRET,
                "source_cache_secret_arn": source_cache_secret_arn,
                "redis_url": os.environ["CATALYST_DR_REDIS_URL"],
                "pg_bin": os.environ["CATALYST_DR_PG_BIN"],
                "pg_run_as": os.environ.get("CATALYST_DR_PG_RUN_AS", ""),
                **dr,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
