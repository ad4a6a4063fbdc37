#!/usr/bin/env bash
# Phase-1 curation on a Spark cluster, native Delta tables on an object store.
#   LAKE=s3a://my-bucket/codemill/lake INPUT='s3a://my-bucket/the-stack/data/*/*.parquet' conf/cluster/curate.sh
# S3: s3a:// paths need hadoop-aws on the classpath (EMR/Dataproc ship it; else add
#     org.apache.hadoop:hadoop-aws:<hadoop version> to --packages). ABFS: abfss://container@account.dfs.core.windows.net/...
#     GCS: gs://bucket/... (Dataproc ships the connector). delta-rs (used for table listings) reads the same
#     credentials from AWS_* / AZURE_* / GOOGLE_* environment variables.
set -euo pipefail
: "${LAKE:?set LAKE to the lake root, e.g. s3a://bucket/codemill/lake}"
: "${INPUT:?set INPUT to the raw data (file, glob or directory)}"
MASTER=${MASTER:-yarn}
exec spark-submit \
  --master "$MASTER" --deploy-mode "${DEPLOY_MODE:-client}" \
  --properties-file "$(dirname "$0")/delta.conf" \
  --conf spark.executor.memory=${EXECUTOR_MEMORY:-16g} \
  --conf spark.executor.cores=${EXECUTOR_CORES:-4} \
  --conf spark.sql.shuffle.partitions=${SHUFFLE_PARTITIONS:-2000} \
  --conf spark.python.worker.reuse=true \
  --conf spark.sql.execution.arrow.maxRecordsPerBatch=2000 \
  --conf spark.sql.execution.arrow.maxBytesPerBatch=8388608 \
  --py-files "${CODEMILL_ZIP:-codemill.zip}" \
  spark_jobs/pipeline.py --input "$INPUT" --lake "$LAKE" --config conf/spark/pipeline.yaml "$@"   # Lake picks the native Delta backend when the session has the extension
