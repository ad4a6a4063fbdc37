# codemill synthetic-data image: vLLM (CUDA) + the codemill package, for GPU nodes.
#   docker build -f docker/synth.Dockerfile -t codemill-synth .
#   docker run --gpus all --rm -v /data:/data codemill-synth \
#       python -m spark_jobs.pipeline --stages synth --lake /data/lake --synth conf/synth/vllm-70b.yaml
# Java is included so the same image can run as a Spark executor with GPU scheduling (conf/cluster/).
FROM vllm/vllm-openai:latest
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/codemill/src
COPY pyproject.toml README.md ./
COPY codemill codemill
COPY spark_jobs spark_jobs
COPY trainer trainer
COPY synth synth
COPY conf conf
COPY data data
# vLLM's image already pins torch; install codemill with the vllm extra without touching it.
RUN pip install --no-cache-dir -e ".[vllm]"
ENTRYPOINT []
CMD ["python", "-m", "spark_jobs.pipeline", "--stages", "synth", "--help"]
