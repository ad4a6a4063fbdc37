# codemill Spark jobs image: pyspark + delta-spark + the codemill package (CPU only).
#   docker build -f docker/spark.Dockerfile -t codemill-spark .
#   docker run --rm codemill-spark spark-submit spark_jobs/pipeline.py --help
# The Spark jars pinned in conf/jars/pom.xml (native Delta, s3a) are baked into the image's jar cache, which every
# session started in it puts on its class path (CODEMILL_JARS); spark-submit elsewhere uses --packages (README).
# Also usable as the executor image on Spark-on-Kubernetes (spark.kubernetes.container.image).
FROM eclipse-temurin:17-jre-jammy
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip procps tini \
    maven && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/codemill PATH=/opt/codemill/bin:$PATH PYSPARK_PYTHON=/opt/codemill/bin/python \
    PYTHONUNBUFFERED=1
RUN python3.11 -m venv $VIRTUAL_ENV
WORKDIR /opt/codemill/src
COPY pyproject.toml README.md ./
COPY codemill codemill
COPY spark_jobs spark_jobs
COPY trainer trainer
COPY synth synth
COPY conf conf
COPY data data
# CPU torch wheel (scoring on CPU executors); the base extras carry pyspark, delta-spark, deltalake.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch \
    && pip install --no-cache-dir -e . \
    && pip uninstall -y torchvision || true
RUN mvn -q -B -f conf/jars/pom.xml dependency:copy-dependencies -DoutputDirectory=/opt/codemill/jars \
    && rm -rf /root/.m2
ENV CODEMILL_JARS=/opt/codemill/jars
ENV SPARK_HOME=/opt/codemill/lib/python3.11/site-packages/pyspark PATH=$PATH:/opt/codemill/lib/python3.11/site-packages/pyspark/bin
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["spark-submit", "--help"]
