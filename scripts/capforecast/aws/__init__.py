"""AWS access: one boto3 session/client factory (:mod:`capforecast.aws.session`), one-line errors
(:mod:`capforecast.aws.errors`), S3 input (:mod:`capforecast.aws.s3_source`) and CloudWatch
ingest (:mod:`capforecast.aws.cloudwatch`).

Importing this package imports no AWS library: the config checks run in every rule.
"""
