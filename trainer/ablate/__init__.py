"""Proxy-model ablations of the data recipe (`python -m trainer.ablate --config conf/ablate/demo.yaml`);
see `trainer/ablate/run.py` and docs/ablations.md."""
