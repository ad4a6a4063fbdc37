"""codemill's shared core: what `spark_jobs/`, `synth/` and `trainer/` all use, importing none of them.

- `config`: one configuration system (YAML + command line, validated up front, errors naming the key);
- `storage`: paths on local disk and object stores;
- `lake`: the table layer (Delta tables, two backends, lineage);
- `session`: the Spark session factory (pyspark is imported only when a session is asked for);
- `schemas`, `languages`: table schemas and names, language detection;
- `benchmarks`: the benchmark catalogue that decontamination, the annotator's alignment set and evaluation read.
"""
