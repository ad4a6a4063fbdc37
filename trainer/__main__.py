"""Entry point of the trainer.

    python -m trainer fit --config conf/train/debug-phase1.yaml
    python -m trainer fit --help
"""

from trainer.cli import main

if __name__ == "__main__":
    main()
