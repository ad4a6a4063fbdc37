# codemill trainer image: CUDA torch, Lightning, DeepSpeed, MLflow, litdata + the codemill package.
#   docker build -f docker/trainer.Dockerfile -t codemill-trainer .
#   docker run --gpus all --rm -v /data:/data codemill-trainer python -m trainer fit --config conf/train/phase1.yaml
# Multi-node: see conf/cluster/train-multinode.sh (torchrun-compatible env, Lightning picks it up).
# No JVM: the trainer and the evaluation import codemill's core and trainer/ only (tests/test_architecture.py checks
# that they import with pyspark blocked); tables are read and written with delta-rs.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
    build-essential git && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/codemill PATH=/opt/codemill/bin:$PATH PYTHONUNBUFFERED=1
RUN python3.11 -m venv $VIRTUAL_ENV
WORKDIR /opt/codemill/src
COPY pyproject.toml README.md ./
COPY codemill codemill
COPY spark_jobs spark_jobs
COPY trainer trainer
COPY synth synth
COPY conf conf
COPY data data
# The CUDA build of torch comes from PyPI's default index on x86-64 Linux.
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e ".[deepspeed]"
CMD ["python", "-m", "trainer", "--help"]
