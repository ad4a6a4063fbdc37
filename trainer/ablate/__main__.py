"""Entry point of the ablations.

    python -m trainer.ablate --config conf/ablate/demo.yaml
    python -m trainer.ablate --help
"""

from trainer.ablate.run import main

if __name__ == "__main__":
    main()
