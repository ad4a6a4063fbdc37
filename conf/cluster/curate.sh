#!/usr/bin/env bash
# Phase-1 curation on a Spark cluster, native Delta tables on an object store.
#   LAKE=s3a://my-bucket/codemill/lake INPUT='s3a://my-bucket/the-stack/data/*/*.parquet' conf/cluster/curate.sh
# S3: delta.conf's --packages brings hadoop-aws (pinned in conf/jars/pom.xml) for s3a://. ABFS:
#     abfss://container@account.dfs.core.windows.net/...  GCS: gs://bucket/... (Dataproc ships the connector).
#     Driver-side metadata calls (delta-rs, listings) take the session's fs.s3a.* settings or the AWS_* / AZURE_* /
#     GOOGLE_* environment; credentials are never printed or recorded.
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
