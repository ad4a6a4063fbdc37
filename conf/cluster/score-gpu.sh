#!/usr/bin/env bash
# Quality scoring (annotator) on GPU executors through Spark's resource scheduling: one GPU per executor,
# one scoring task per GPU, the model loaded once per Python worker and placed on the GPU Spark assigned.
#   LAKE=s3a://bucket/codemill/lake ANNOTATOR=s3a://bucket/codemill/annotator conf/cluster/score-gpu.sh
set -euo pipefail
: "${LAKE:?}" "${ANNOTATOR:?}"
exec spark-submit \
  --master "${MASTER:-yarn}" \
  --properties-file "$(dirname "$0")/delta.conf" \
  --conf spark.executor.resource.gpu.amount=1 \
  --conf spark.task.resource.gpu.amount=1 \
  --conf spark.executor.resource.gpu.discoveryScript=${GPU_DISCOVERY:-/opt/spark/examples/src/main/scripts/getGpusResources.sh} \
  --conf spark.executor.cores=${EXECUTOR_CORES:-8} \
  --conf spark.task.cpus=${EXECUTOR_CORES:-8} \
  --conf spark.executor.memory=${EXECUTOR_MEMORY:-32g} \
  --conf spark.sql.execution.arrow.maxRecordsPerBatch=512 \
  --py-files "${CODEMILL_ZIP:-codemill.zip}" \
  spark_jobs/pipeline.py --stages score --lake "$LAKE" --score.annotator "$ANNOTATOR" "$@"
