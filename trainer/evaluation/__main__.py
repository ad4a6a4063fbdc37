"""python -m trainer.evaluation --config conf/eval/default.yaml --model runs/phase1/hf [--mlflow_run_id ID]"""

from trainer.evaluation.run import main

if __name__ == "__main__":
    main()
